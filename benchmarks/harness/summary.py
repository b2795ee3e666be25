"""What the terminal shows at the end of a run: at most :data:`MAX_LINES` lines; the full report stays in its folder.

One table, a row per system that ran: the corpus rate, the batch-1 p50, and the accuracy
figures next to them (MiniLM, real weights); then each bowrt system against the fastest
peer, paired round by round (batch 1: also call against call), and in each corpus length bucket;
then one line naming every system that did not run and what would bring it in.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness.report import _fmt, host_flags, left_out_line, paired

MAX_LINES = 40
COLUMNS = ("system", "precision", "corpus passages/s", "batch-1 p50 ms", "min cosine", "overlap@10", "alone vs batch")


def _median(w: dict[str, Any] | None, name: str, metric: str) -> str:
    r = ((w or {}).get("results") or {}).get(name) or {}
    return _fmt((r.get(metric) or {}).get("median"))


def _accuracy(acc: dict[str, Any] | None, name: str) -> list[str]:
    a = ((acc or {}).get("results") or {}).get(name) or {}
    if a.get("status") != "ok":
        return ["-", "-", "-"]
    return [f"{a['min_cosine']:.5f}", f"{a['overlap_at_10']:.3f}", f"{a['batch_invariance_min_cosine']:.6f}"]


def _span(s: dict[str, Any]) -> str:
    return f"{_fmt(s['median'])}x" + (f" [{_fmt(s['min'])}–{_fmt(s['max'])}]" if s["n"] > 1 else "")


def _paired_lines(res: dict[str, Any]) -> list[str]:
    out = []
    for wl, metric, what, higher in (("corpus", "items_per_s", "corpus", True), ("latency", "p50_ms", "batch 1", False)):
        w = res["workloads"].get(wl) or {}
        for n, s in paired(w.get("results") or {}, higher).items():
            if s.get("median") is not None:
                per_call = ((w["results"][n].get("paired_per_call")) or {}) if wl == "latency" else {}
                more = f"; call against call {_span(per_call)}" if per_call.get("median") is not None else ""
                out.append(f"  {n}, {what}: {_span(s)} the fastest peer of the same round{more}")
    return out + _bucket_lines(res)


def _bucket_lines(res: dict[str, Any]) -> list[str]:
    """One line per bowrt system: its paired corpus ratio in each length bucket."""
    buckets = (res["workloads"].get("corpus") or {}).get("buckets") or {}
    by_name: dict[str, list[str]] = {}
    for label, b in buckets.items():
        for n, r in b.get("results", {}).items():
            if (r.get("paired") or {}).get("median") is not None:
                by_name.setdefault(n, []).append(f"{label} {_span(r['paired'])}")
    return [f"  {n}, corpus by length (tokens): {', '.join(parts)}" for n, parts in by_name.items()]


def summary(res: dict[str, Any], out_dir: str) -> list[str]:
    """The run in at most :data:`MAX_LINES` lines (see the module docstring)."""
    m, meta = res["machine"], res["meta"]
    ran = [n for n, s in res["systems"].items() if s["status"] == "ok"]
    head = [f"== bowrt benchmark: {meta['model']['folder']} ({meta['model']['layers']} layers, hidden "
            f"{meta['model']['hidden']}); {meta['rounds']} round(s), {meta['threads']} thread(s), "
            f"{_fmt(meta.get('duration_s'))} s",
            f"   host: {m.get('processor')}, int8 ISA {m.get('int8', {}).get('int8_isa', '?')}; "
            f"flags {' '.join(host_flags(m)) or '-'}",
            *[f"   {n}" for n in meta.get("notes", []) if n.startswith("WARNING")], ""]
    rows = [[n, res["systems"][n].get("precision", "-"), _median(res["workloads"].get("corpus"), n, "items_per_s"),
             _median(res["workloads"].get("latency"), n, "p50_ms"), *_accuracy(res.get("accuracy"), n)] for n in ran]
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)] + ["| " + " | ".join(r) + " |" for r in rows]
    pairs = _paired_lines(res)
    lines = head + table + ([""] + ["bowrt, paired per round (median [min–max]):"] + pairs if pairs else [])
    missing = left_out_line(res["systems"])
    tail = ([f"not run here: {missing}"] if missing else []) + [
        f"full report: {out_dir}/results.md (every table, plots, notes); libraries' own output: {out_dir}/third_party.log"]
    room = MAX_LINES - len(tail) - 1
    if len(lines) > room:  # very many systems: the rest is in the report
        lines = lines[: room - 1] + [f"... ({len(lines) - room + 1} more lines in the report)"]
    return lines + [""] + tail
