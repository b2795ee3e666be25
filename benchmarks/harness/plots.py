"""The plots of a benchmark result: throughput.png, latency.png, concurrent.png, and the frontier
(speed against accuracy, :mod:`benchmarks.harness.frontier`) (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness.frontier import frontier
from benchmarks.harness.spec import is_bowrt


def plots(res: dict[str, Any], out: Path) -> list[Path]:
    """throughput.png, latency.png, (with concurrency results) concurrent.png, and the frontier plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = [_throughput(res, out / "throughput.png", plt), _latency(res, out / "latency.png", plt)]
    if res["workloads"].get("concurrent", {}).get("results"):
        written.append(_concurrent(res["workloads"]["concurrent"], out / "concurrent.png", plt))
    return written + frontier(res, out, plt)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _throughput(res: dict[str, Any], path: Path, plt: Any) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, wl in zip(axes, ("batch32x128", "corpus")):
        rows = res["workloads"].get(wl, {}).get("results", {})
        names = [n for n, r in rows.items() if r.get("items_per_s", {}).get("median")]
        med = [rows[n]["items_per_s"]["median"] for n in names]
        err = [[m - rows[n]["items_per_s"]["min"] for n, m in zip(names, med)],
               [rows[n]["items_per_s"]["max"] - m for n, m in zip(names, med)]]
        ax.bar(names, med, yerr=err, capsize=4, color=["tab:orange" if is_bowrt(n) else "tab:blue" for n in names])
        ax.set_title(f"{wl}: passages/s (median, min-max)")
        ax.tick_params(axis="x", rotation=30)
    return _save(fig, path, plt)


def _latency(res: dict[str, Any], path: Path, plt: Any) -> Path:
    lat = res["workloads"].get("latency", {}).get("results", {})
    names = [n for n, r in lat.items() if r.get("samples_ms")]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 4.5))
    if names:
        ax.boxplot([lat[n]["samples_ms"] for n in names], whis=(1, 99), showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30)
        ax.set_yscale("log")
    ax.set_ylabel("ms per single-query call (whiskers p1-p99)")
    ax.set_title("batch-1 query latency, all measured rounds")
    return _save(fig, path, plt)


def _concurrent(conc: dict[str, Any], path: Path, plt: Any) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, by_mode in conc["results"].items():
        for mode, style in (("batched", "-o"), ("direct", "--s")):
            pts = [(c, by_mode.get(mode, {}).get(str(c), {}).get("rps", {}).get("median")) for c in conc["clients"]]
            pts = [(c, v) for c, v in pts if v]
            if pts:
                ax.plot(*zip(*pts), style, label=f"{n} {mode}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("closed-loop clients")
    ax.set_ylabel("requests/s")
    ax.legend()
    ax.set_title("concurrent single queries: DynamicBatcher vs one call per request")
    return _save(fig, path, plt)
