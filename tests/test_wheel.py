"""What ships: the built wheel holds the runtime, export, serve, scale and CLI code, and no
benchmark harness or test helper (those are dev-only, in the source checkout)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Top-level entries of the bowrt package that may ship.
SHIPPED = {"__init__.py", "atomic.py", "bundle.py", "cli.py", "corpus", "corpus.py", "errors.py", "options.py",
           "export", "runtime", "scale", "serve", "integrations", "eval", "signing.py", "trust_cli.py",
           "protobuf.py", "_version.py"}


def test_wheel_holds_the_product_only(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "bowrt", src / "bowrt", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0 and "No module named" in p.stderr:
        pytest.skip(f"cannot build a wheel here: {p.stderr.strip()[-200:]}")
    assert p.returncode == 0, p.stderr
    (wheel,) = (tmp_path / "dist").glob("bowrt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if not n.startswith("bowrt-")]  # the .dist-info folder aside
    assert code and all(n.startswith("bowrt/") for n in code), [n for n in code if not n.startswith("bowrt/")]
    tops = {n.split("/")[1] for n in code}
    assert tops <= SHIPPED, f"unexpected in the wheel: {sorted(tops - SHIPPED)}"
    assert {"runtime", "export", "serve", "scale", "eval", "cli.py", "bundle.py"} <= tops
    assert not [n for n in code if "bench" in n or n.split("/")[1] == "tests"], "benchmark or test code in the wheel"
