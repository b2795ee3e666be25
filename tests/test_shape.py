"""The codebase's shape, checked: no module in bowrt/ over 400 lines, no function over 60.

A newcomer reads a step at a time; a 650-line module or a 160-line function hides the
steps. An exception needs a reason here, in EXCEPTIONS.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "bowrt"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
# "path:function" or "path" -> why it is longer.
EXCEPTIONS: dict[str, str] = {}


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def shape_report() -> tuple[list[str], list[str]]:
    long_files, long_functions = [], []
    for path in sorted(ROOT.rglob("*.py")):
        rel = str(path.relative_to(ROOT.parent))
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_FILE_LINES and rel not in EXCEPTIONS:
            long_files.append(f"{rel}: {n} lines")
        for name, lines in _functions(ast.parse(text)):
            if lines > MAX_FUNCTION_LINES and f"{rel}:{name}" not in EXCEPTIONS:
                long_functions.append(f"{rel}:{name}: {lines} lines")
    return long_files, long_functions


def test_no_long_modules():
    long_files, _ = shape_report()
    assert not long_files, "modules over 400 lines (split them, or add a reason to EXCEPTIONS):\n" + "\n".join(long_files)


def test_no_long_functions():
    _, long_functions = shape_report()
    assert not long_functions, "functions over 60 lines:\n" + "\n".join(long_functions)


# The halves (DESIGN.md): the runtime and the bundle contract import nothing above them.
FORBIDDEN = {
    "runtime": ("bowrt.export", "bowrt.serve", "bowrt.scale", "bowrt.cli", "bowrt.corpus", "benchmarks", "tests"),
    "bundle.py": ("bowrt.export", "bowrt.serve", "bowrt.scale", "bowrt.cli", "bowrt.corpus", "bowrt.runtime",
                  "benchmarks", "tests"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_layering():
    """Every import, lazy ones inside functions too: the runtime never reaches up into the
    export, serve, scale, corpus or CLI code (or the benchmarks), nor the bundle into any."""
    bad = []
    for part, forbidden in FORBIDDEN.items():
        files = sorted((ROOT / part).rglob("*.py")) if (ROOT / part).is_dir() else [ROOT / part]
        assert files and all(f.is_file() for f in files), part
        for path in files:
            bad += [f"{path.relative_to(ROOT.parent)} imports {name}" for name in sorted(_imports(path))
                    if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert not bad, "\n".join(bad)


if __name__ == "__main__":
    for line in sum(shape_report(), []):
        print(line)
