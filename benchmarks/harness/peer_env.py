"""The peer environment: a cached venv where the peers that cannot run next to this project's stack run.

optimum-onnx 0.1.0, its only release, needs transformers < 4.58; this project runs
transformers 5. So sentence-transformers' ONNX backends (``st-onnx``, ``st-onnx-O3``,
``st-onnx-int8``) and optimum's ``ORTModelForFeatureExtraction`` run in a venv of their
own, and so does OpenVINO (with NNCF for its int8), which the main environment does not
carry. The bench talks to that venv through a worker process
(:mod:`benchmarks.harness.peer_worker`); the figures flow back into one report.

    python -m benchmarks.harness.peer_env build      # once; minutes (mostly downloads), progress on stderr
    python -m benchmarks.harness.peer_env info       # where it is, whether it is ready, what it holds

The venv lives in the bench cache (``$BOWRT_BENCH_CACHE``, else ``~/.cache/bowrt/bench``),
in a folder named after a hash of its requirements, so a changed pin builds a new one.
torch is installed first and pinned (:data:`TORCH`): a bare torch requirement would pull
a multi-GB CUDA build. ``ready.json`` (written last) records the requirements, the
install commands, the build time and ``pip freeze``; the report quotes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness.models import cache_dir

TORCH = "torch==2.13.0"  # the CPU build this project's machines carry; first, so nothing pulls a CUDA one
REQUIREMENTS = (
    "transformers<4.58",  # optimum-onnx 0.1.0's pin
    "optimum-onnx[onnxruntime]>=0.1.0",
    "sentence-transformers>=3.0,<6",  # < 6: the releases whose ONNX backend goes through optimum
    "openvino>=2024.4",
    "nncf>=2.14",
    "tokenizers>=0.19",
    "numpy>=1.26",
    "psutil>=5.9",
)
READY = "ready.json"
BUILD_COMMAND = "python -m benchmarks.harness.peer_env build"
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def env_key(torch: str = TORCH, requirements: tuple[str, ...] = REQUIREMENTS) -> str:
    """A short hash of what the venv holds (and of the interpreter's minor version)."""
    text = "|".join((f"py{sys.version_info.major}.{sys.version_info.minor}", torch, *requirements))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def env_dir(root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"peer-env-{env_key()}"


def python_of(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def build_commands(venv: Path, base_python: str = sys.executable, torch: str = TORCH,
                   requirements: tuple[str, ...] = REQUIREMENTS) -> list[list[str]]:
    """The commands that build the venv, in order: create it, torch alone and pinned, then the rest.

    The rest is installed with the torch pin repeated, so that no requirement can swap torch
    for another build.
    """
    py = str(python_of(venv))
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar=off"]
    return [[base_python, "-m", "venv", str(venv)], [*pip, "--upgrade", "pip"], [*pip, torch],
            [*pip, torch, *requirements]]


def ready_info(venv: Path | None = None) -> dict | None:
    """``ready.json`` of a finished build, or None (not built, half built, or its python is gone)."""
    venv = venv or env_dir()
    try:
        info = json.loads((venv / READY).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return info if python_of(venv).is_file() else None


def how_to_build() -> str:
    return f"build the peer environment once: {BUILD_COMMAND} (into {env_dir()})"


def build(venv: Path | None = None, log: Log = _stderr, force: bool = False) -> dict:
    """Build the venv (once): run :func:`build_commands`, then record ``pip freeze`` in ``ready.json``."""
    venv = venv or env_dir()
    if not force and (info := ready_info(venv)) is not None:
        log(f"peer environment ready in {venv} (built {info['built']}); --force rebuilds it")
        return info
    shutil.rmtree(venv, ignore_errors=True)  # a half-built venv is never reused
    t0 = time.time()
    commands = build_commands(venv)
    for i, cmd in enumerate(commands, 1):
        log(f"[{time.time() - t0:6.0f}s] step {i}/{len(commands)}: {' '.join(cmd)}")
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        for line in done.stdout.splitlines():
            if line.startswith(("Collecting", "Successfully", "ERROR", "Downloading")):
                log("    " + line[:160])
        if done.returncode != 0:
            raise RuntimeError(f"step {i} failed (exit {done.returncode}): {' '.join(cmd)}\n{done.stdout[-3000:]}")
    freeze = subprocess.run([str(python_of(venv)), "-m", "pip", "freeze"], capture_output=True, text=True, check=True)
    info = {"built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_s": round(time.time() - t0, 1),
            "torch": TORCH, "requirements": list(REQUIREMENTS), "commands": commands,
            "freeze": freeze.stdout.split()}
    tmp = venv / (READY + ".tmp")
    tmp.write_text(json.dumps(info, indent=1), encoding="utf-8")
    tmp.replace(venv / READY)
    log(f"peer environment built in {info['build_s']:.0f} s: {venv}")
    return info


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.harness.peer_env", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("build", "info", "path"))
    p.add_argument("--force", action="store_true", help="rebuild even if a finished build is there")
    args = p.parse_args(argv)
    if args.command == "build":
        try:
            build(force=args.force)
        except RuntimeError as e:
            print(f"peer_env: {e}", file=sys.stderr)
            return 1
        return 0
    if args.command == "path":
        print(env_dir())
        return 0
    info = ready_info()
    print(json.dumps({"venv": str(env_dir()), "ready": info is not None,
                      **({k: info[k] for k in ("built", "build_s", "freeze")} if info else {"how": how_to_build()})},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
