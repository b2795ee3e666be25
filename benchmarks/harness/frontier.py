"""Speed against accuracy: ``frontier_corpus.png`` and ``frontier_latency.png``, one point per system.

A faster int8 system is only worth having at the accuracy it keeps, so the two figures
belong on one picture. A point is a system with both a speed figure (the median over
rounds) and an accuracy figure (min cosine to PyTorch fp32 on MiniLM, status "ok");
the rest are left out. bowrt's variants are orange and joined in order of min cosine
(bowrt's frontier: fp32, then the int8 forms), peers blue.

The cosines cluster near 1 (0.99999 against 0.9995), so x is 1 - min cosine on a log
axis, reversed: further right is closer to fp32. An exact match (the reference itself)
has no place on a log axis; it is drawn at :data:`FLOOR` and labelled so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness.spec import is_bowrt

FLOOR = 1e-7  # 1 - min cosine below this (float32 rounding; the reference itself: 0) is drawn here
FRONTIER_X = "x = 1 - min cosine to PyTorch fp32, log scale, reversed (further right is closer to fp32)"
X_LABEL = "1 - min cosine (lower is closer to fp32; log, reversed)"
Point = tuple[str, float, float]  # (system, min cosine, speed)


def _min_cosines(res: dict[str, Any]) -> dict[str, float]:
    acc = ((res.get("accuracy") or {}).get("results")) or {}
    return {n: float(a["min_cosine"]) for n, a in acc.items() if a.get("status") == "ok" and a.get("min_cosine") is not None}


def frontier_points(res: dict[str, Any], wl: str, bucket: str | None = None) -> list[Point]:
    """The systems of workload ``wl`` (``"corpus"``, ``"latency"``; ``bucket``: one corpus length bucket)
    that have both a median speed and an accuracy figure: (name, min cosine, passages/s or p50 ms)."""
    cos = _min_cosines(res)
    w = (res.get("workloads") or {}).get(wl) or {}
    if bucket is not None:
        w = (w.get("buckets") or {}).get(bucket) or {}
    metric = "p50_ms" if wl == "latency" else "items_per_s"
    out = []
    for n, r in (w.get("results") or {}).items():
        speed = (r.get(metric) or {}).get("median")
        if speed and n in cos:
            out.append((n, cos[n], float(speed)))
    return out


def _panel(ax: Any, points: list[Point], title: str, ylabel: str) -> None:
    """One scatter: a labelled point per system, bowrt's joined from the most to the least exact."""
    for n, c, v in points:
        x = max(1.0 - c, FLOOR)
        ax.scatter([x], [v], color="tab:orange" if is_bowrt(n) else "tab:blue", zorder=3)
        label = n + (" (≤1e-7)" if 1.0 - c < FLOOR else "")
        ax.annotate(label, (x, v), xytext=(5, 4), textcoords="offset points", fontsize=8)
    line = sorted((p for p in points if is_bowrt(p[0])), key=lambda p: -p[1])
    if len(line) > 1:
        ax.plot([max(1.0 - c, FLOOR) for _, c, _ in line], [v for _, _, v in line], "-", color="tab:orange", zorder=2)
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.12)  # room for the labels of the points at the edges
    ax.invert_xaxis()
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)


def _figure(plt: Any, panels: list[tuple[str, list[Point]]], ylabel: str, path: Path, log_y: bool = False) -> Path:
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 1.0, 5.0), squeeze=False)
    for ax, (title, points) in zip(axes[0], panels):
        _panel(ax, points, title, ylabel)
        if log_y:  # plain numbers (2, 3, 5 ms), not powers of ten
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    fig.suptitle(f"speed against accuracy; bowrt orange (joined: its frontier), peers blue\n{FRONTIER_X}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figures(res: dict[str, Any]) -> dict[str, tuple[list[tuple[str, list[Point]]], str, bool]]:
    """``{file name: (panels, y label, log y)}`` of the frontier figures that have a point: corpus (the
    whole corpus, then a panel per length bucket) and batch-1 latency. None without an accuracy table."""
    buckets = ((res.get("workloads") or {}).get("corpus") or {}).get("buckets") or {}
    corpus = [("corpus, all passages (higher is better)", frontier_points(res, "corpus"))]
    corpus += [(f"corpus, {lb} tokens ({b.get('passages', '?')} passages)", frontier_points(res, "corpus", lb))
               for lb, b in buckets.items()]
    latency = [("batch-1 query latency (lower is better)", frontier_points(res, "latency"))]
    out = {"frontier_corpus.png": ([(t, p) for t, p in corpus if p], "passages/s (median over rounds)", False),
           "frontier_latency.png": ([(t, p) for t, p in latency if p],
                                    "batch-1 p50 ms (median over rounds; lower is better)", True)}
    return {name: fig for name, fig in out.items() if fig[0]}


def frontier(res: dict[str, Any], out: Path, plt: Any) -> list[Path]:
    """Write :func:`figures` into ``out``; their paths."""
    return [_figure(plt, panels, ylabel, out / name, log_y) for name, (panels, ylabel, log_y) in figures(res).items()]
