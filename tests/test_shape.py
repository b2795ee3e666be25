"""The codebase's shape, checked: no module in bowrt/ or the benchmark harness over 400 lines, no
function over 60, no import cycle anywhere in bowrt/ or benchmarks/, and the layers apart.

A newcomer reads a step at a time; a 650-line module or a 160-line function hides the
steps, and two modules that import each other can only be read together. An exception
needs a reason here, in EXCEPTIONS.
"""

from __future__ import annotations

import ast
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
ROOT = CHECKOUT / "bowrt"
HARNESS = CHECKOUT / "benchmarks" / "harness"
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
    for path in sorted([*ROOT.rglob("*.py"), *HARNESS.rglob("*.py")]):
        rel = str(path.relative_to(CHECKOUT))
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
    assert any("benchmarks/harness" in str(p) for p in HARNESS.rglob("*.py"))  # the harness is covered
    assert not long_files, "modules over 400 lines (split them, or add a reason to EXCEPTIONS):\n" + "\n".join(long_files)


def test_no_long_functions():
    _, long_functions = shape_report()
    assert not long_functions, "functions over 60 lines:\n" + "\n".join(long_functions)


# The halves (DESIGN.md): the runtime and the bundle contract import nothing above them.
FORBIDDEN = {
    "runtime": ("bowrt.export", "bowrt.serve", "bowrt.scale", "bowrt.cli", "bowrt.corpus", "bowrt.eval", "benchmarks",
                "tests"),
    "bundle.py": ("bowrt.export", "bowrt.serve", "bowrt.scale", "bowrt.cli", "bowrt.corpus", "bowrt.runtime", "bowrt.eval",
                  "benchmarks", "tests"),
    # The eval runs on the runtime's install: it never needs the export stage, torch or the server.
    "eval": ("bowrt.export", "bowrt.serve", "bowrt.scale", "bowrt.cli", "torch", "transformers", "onnx", "benchmarks",
             "tests"),
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


# --- import cycles ------------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CHECKOUT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:``: imports for annotations only, never run."""
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_graph(tops: tuple[str, ...] = ("bowrt", "benchmarks")) -> dict[str, set[str]]:
    """Module -> the project modules it imports, lazy imports inside functions included (they run too);
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    paths = {_module_name(p): p for top in tops for p in sorted((CHECKOUT / top).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        stack = [ast.parse(path.read_text(encoding="utf-8"))]
        while stack:
            for node in ast.iter_child_nodes(stack.pop()):
                if _type_checking_only(node):
                    continue
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        up = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join(up + ([node.module] if node.module else []))
                    found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names)
                stack.append(node)
        graph[name] = set()
        for target in found:
            while target and target not in paths:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle_and_ignores_type_only_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "bowrt.runtime.encoder" in graph["bowrt.runtime"]  # a package's __init__ imports its modules
    assert "benchmarks.harness.systems" in graph["benchmarks.harness.runner"]
    # st_encode names the Encoder for annotations only (TYPE_CHECKING): that is not an import that runs.
    assert "bowrt.runtime.encoder" not in graph["bowrt.runtime.st_encode"]


def test_no_import_cycle_in_bowrt_or_the_benchmarks():
    """Every import, lazy ones inside functions too: no two modules reach each other."""
    found = cycles(import_graph())
    assert not found, "import cycles (modules that import each other, directly or around a loop):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_the_harness_never_imports_the_studies_nor_bowrt_the_benchmarks():
    graph = import_graph()
    bad = [f"{m} imports {t}" for m, targets in graph.items() for t in targets
           if (m.startswith("benchmarks.harness") and t.startswith("benchmarks.studies"))
           or (m.startswith("bowrt") and t.startswith("benchmarks"))]
    assert not bad, "\n".join(bad)
    adapters = [m for m in graph if m.startswith("benchmarks.harness.adapters.")]
    assert len(adapters) >= 8
    for m in adapters:  # an adapter imports the bottom of the harness only, never the registry or the runner
        up = {t for t in graph[m] if t.startswith("benchmarks.harness") and not t.startswith("benchmarks.harness.adapters.")}
        assert up <= {"benchmarks.harness.spec", "benchmarks.harness.peer_env"}, (m, up)


if __name__ == "__main__":
    for line in sum(shape_report(), []):
        print(line)
    for c in cycles(import_graph()):
        print("cycle: " + " <-> ".join(c))
