"""The opt-in retrieval gate of an export: ``bowrt export ... --eval DIR``.

The probe-set gates (parity.py) measure cosines on built-in texts; this one measures what
a retriever's user decides on. The export's fp32 and int8 bundles are evaluated on the
user's labelled set (``bowrt eval``, a BEIR or DPR layout) before anything is written to
the output folder, and the int8 variant is refused when its Recall@20 (BEIR; top-20 answer
accuracy for DPR) is more than ``max_drop`` points below fp32's. The other variants are
written either way; the report stays in ``OUT/eval/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bowrt.errors import ExportOptionError, ParityGateError

DEFAULT_MAX_DROP = 0.5  # points of Recall@20 (percent)
GATE_METRIC = {"beir": "recall@20", "dpr": "top20"}


def check_options(variants: tuple[str, ...], data: Any, max_drop: float) -> None:
    """Before anything loads: the gate compares int8 with fp32, so both must be exported."""
    if data is None:
        return
    if not ("fp32" in variants and "int8" in variants):
        raise ExportOptionError(f"--eval compares the int8 bundle with the fp32 one: export both (--variants "
                                f"fp32,int8; asked for {','.join(variants)})")
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0 <= max_drop <= 100:
        raise ExportOptionError(f"--eval-max-drop must be a number of points in 0..100, got {max_drop!r}")


def run(staged: Path, data: str | Path, report_dir: Path, max_drop: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Evaluate ``staged/fp32`` and ``staged/int8`` on ``data``; the verdict, with the figures."""
    from bowrt.eval import evaluate

    log(f"retrieval gate: fp32 and int8 on {data} (int8 may lose at most {max_drop} points) ...")
    res = evaluate([staged / "fp32", staged / "int8"], data, report_dir, log=lambda m: log("  " + m))
    metric = GATE_METRIC[res["set"]["layout"]]
    fp32, int8 = (res["bundles"][n]["metrics"][metric] for n in ("fp32", "int8"))
    drop = 100 * (fp32 - int8)
    ci = res["comparisons"]["int8"]["metrics"][metric]
    verdict = {"metric": metric, "fp32": fp32, "int8": int8, "drop_points": drop, "max_drop_points": max_drop,
               "interval_points": [100 * ci["low"], 100 * ci["high"]], "passed": drop <= max_drop,
               "report": str(report_dir / "eval.md")}
    log(f"  {metric}: fp32 {100 * fp32:.1f}, int8 {100 * int8:.1f} (int8 - fp32 {-drop:+.1f} points, 95 % interval "
        f"[{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}]): {'PASS' if verdict['passed'] else 'FAIL'}")
    return verdict


def raise_if_refused(verdict: dict[str, Any] | None) -> None:
    """After the other bundles are written: :class:`ParityGateError` with the figures when int8 was refused."""
    if verdict is None or verdict["passed"]:
        return
    raise ParityGateError(
        f"int8 refused by the retrieval gate: {verdict['metric']} {100 * verdict['int8']:.1f} against fp32's "
        f"{100 * verdict['fp32']:.1f}, {verdict['drop_points']:.1f} points lower (bound {verdict['max_drop_points']}); "
        f"the other bundles are written, the report is {verdict['report']}")
