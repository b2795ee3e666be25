"""The report of ``bowrt eval``: ``eval.json`` (everything), ``eval.md`` (the tables), ``recall.png`` (the curves).

The plot needs matplotlib (``pip install 'bowrt[eval]'``); without it the report says so
and the rest is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bowrt.atomic import write_text_atomic


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _signed(x: float) -> str:
    return f"{round(100 * x, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0" for a difference that rounds to nothing


def markdown(res: dict[str, Any]) -> str:
    s, bundles, comp = res["set"], res["bundles"], res["comparisons"]
    names = list(bundles)
    cols = list(next(iter(bundles.values()))["metrics"])
    out = [f"# bowrt eval: {s['path']}", "",
           f"- {s['layout']} set: {s['queries']} queries, {s['passages']} passages; host {s['host']}",
           *(["- skipped: " + "; ".join(f"{n} {why}" for why, n in s["skipped"].items())] if s["skipped"] else
             ["- skipped: nothing"]),
           f"- metrics in points (percent); intervals: paired bootstrap 95 %, {res['settings']['bootstrap']} resamples "
           "of the queries", "",
           "| bundle | variant | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for n in names:
        b = bundles[n]
        out.append(f"| {n} | {b['variant']} | " + " | ".join(_pct(b["metrics"][c]) for c in cols) + " |")
    for n, c in comp.items():
        out.append(f"| {n} − {c['against']} | | " + " | ".join(
            f"{_signed(c['metrics'][m]['diff'])} [{_signed(c['metrics'][m]['low'])}, {_signed(c['metrics'][m]['high'])}]"
            for m in cols) + " |")
    if comp:
        out += ["", "| bundle | against | overlap@10 | overlap@100 | queries lost | queries gained |", "|---|---|---|---|---|---|"]
        for n, c in comp.items():
            ch = c["changed"]
            out.append(f"| {n} | {c['against']} | {c['overlap@10']:.3f} | {c['overlap@100']:.3f} | "
                       f"{len(ch['lost'])} | {len(ch['gained'])} |")
        out += ["", "Queries lost or gained count a change of the hit at "
                f"`{next(iter(comp.values()))['changed']['metric']}`; their ids are in eval.json."]
    out += ["", "| bundle | passages encoded in s (shards written / reused) | queries s | search s |", "|---|---|---|---|"]
    for n, b in bundles.items():
        e = b["encode"]
        out.append(f"| {n} | {e['seconds']:.1f} ({e['shards_written']} / {e['shards_reused']}) | {b['query_s']:.2f} | "
                   f"{b['search_s']:.2f} |")
    if res.get("plot_note"):
        out += ["", res["plot_note"]]
    return "\n".join(out) + "\n"


def plot(res: dict[str, Any], path: Path) -> str | None:
    """The curves of every bundle; a note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "No plot: matplotlib is not installed (pip install 'bowrt[eval]')."
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, b in res["bundles"].items():
        ks = range(1, len(b["curve"]) + 1)
        ax.plot(ks, [100 * v for v in b["curve"]], label=f"{n} ({b['variant']})")
    ax.set_xscale("log")
    ax.set_xlabel("k (passages retrieved)")
    ax.set_ylabel("Recall@k (%)" if res["set"]["layout"] == "beir" else "top-k answer accuracy (%)")
    ax.set_title(f"bowrt eval: {Path(res['set']['path']).name}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write(res: dict[str, Any], out: Path) -> dict[str, Path]:
    """``eval.json``, ``eval.md`` and ``recall.png`` in ``out`` (each written atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "eval.json", "md": out / "eval.md", "plot": out / "recall.png"}
    note = plot(res, paths["plot"])
    if note:
        res["plot_note"] = note
        del paths["plot"]
    write_text_atomic(paths["json"], json.dumps(res, indent=1, default=str) + "\n")
    write_text_atomic(paths["md"], markdown(res))
    return paths
