"""Cold start and peak memory: one system per fresh interpreter.

``measure`` (parent) runs, for each system, the child below:

    python -m benchmarks.harness.coldstart SPEC_JSON TEXTS_JSON

The parent notes the wall clock just before it starts this process; we print
the wall clock at the first vector, so cold start covers interpreter start,
imports, model load and one query. Peak RSS (``ru_maxrss``) is read after load,
after the first vector and after each workload in TEXTS_JSON
(``{"batch32x128": [...], "corpus": [...]}``), so one system's memory is never
mixed with another's. Prints one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


def interpreter(name: str) -> str:
    """The python a system's fresh process runs in: the peer environment's for a peer-worker system."""
    from benchmarks.harness import systems

    return str(systems.peer_python()) if systems.runs_in_worker(name) else sys.executable


def measure(specs: dict[str, Any], payload: dict[str, list[str]], log: Callable[[str], None]) -> dict[str, Any]:
    """Per system (``SystemSpec``): cold start (process start -> first vector) and peak RSS after each step."""
    from benchmarks.harness.peer_client import child_env

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bowrt-bench-") as tmp:
        path = Path(tmp) / "texts.json"
        path.write_text(json.dumps(payload), encoding="utf-8")
        for n, spec in specs.items():
            log(f"  cold start and peak RSS: {n} ...")
            t0 = time.time()
            try:
                p = subprocess.run([str(interpreter(spec.name)), "-m", "benchmarks.harness.coldstart", spec.to_json(), str(path)],
                                   capture_output=True, text=True, timeout=1800, env=child_env())
            except subprocess.SubprocessError as e:
                out[n] = {"error": f"{type(e).__name__}: {e}"}
                continue
            try:
                got = json.loads(p.stdout.strip().splitlines()[-1])
            except (json.JSONDecodeError, IndexError):
                out[n] = {"error": f"the child exited {p.returncode} without a result: {p.stderr.strip()[-400:]}"}
                continue
            if "error" in got:
                out[n] = got
                continue
            out[n] = {"cold_start_s": got["t_first_vector"] - t0, "start_to_loaded_s": got["t_loaded"] - t0,
                      "interpreter_start_s": got["t_main"] - t0,
                      **{k: v for k, v in got.items() if k.startswith(("rss", "peak", "torch"))},
                      "measured_after": ["load", "first query", *payload]}
    return out


def main(argv: list[str]) -> int:
    t_main = time.time()  # the harness is imported after: its imports count as the system's load
    from benchmarks.harness import systems
    from benchmarks.harness.spec import SystemSpec, Unavailable
    from benchmarks.harness.usage import peak_rss_mb

    spec = SystemSpec.from_json(argv[0])
    with open(argv[1], encoding="utf-8") as f:
        workloads = json.load(f)
    out: dict[str, object] = {"t_main": t_main}
    try:
        sys_ = systems.load(spec)
    except Unavailable as e:
        print(json.dumps({"error": str(e)}))
        return 0
    out["t_loaded"] = time.time()
    out["rss_after_load_mb"] = peak_rss_mb()
    sys_.encode(["who wrote the play hamlet?"], "query")
    out["t_first_vector"] = time.time()
    out["rss_after_first_vector_mb"] = peak_rss_mb()
    out["torch_imported"] = "torch" in sys.modules
    for name, texts in workloads.items():
        sys_.encode(texts, "passage")
        out[f"rss_after_{name}_mb"] = peak_rss_mb()
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
