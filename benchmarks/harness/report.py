"""Write a benchmark result: ``results.json`` (everything), ``results.md`` (tables), PNG plots.

The result is one plain dict (see ``runner.run``); this module only reads it,
so a stored ``results.json`` can be re-rendered with ``write_report``.
Every figure is a median over rounds with its min and max next to it;
speed ratios are against PyTorch fp32 (``torch``) and against the best peer
(the fastest non-bowrt system) of the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import frontier
from benchmarks.harness.plots import plots
from benchmarks.harness.spec import is_bowrt

REFERENCE = "torch"
# (workload, metric, label, higher is better)
SPEED_TABLES = (
    ("latency", "p50_ms", "Batch-1 query latency, p50 (ms)", False),
    ("batch32x128", "items_per_s", "32 passages x 128 tokens (passages/s)", True),
    ("corpus", "items_per_s", "Corpus of mixed lengths (passages/s)", True),
)


def summarize(values: list[float]) -> dict[str, Any]:
    """``{median, min, max, n}`` of per-round values (rounded for reading, raw kept elsewhere)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    v = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _cell(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "-"
    if s["n"] > 1:
        return f"{_fmt(s['median'])} [{_fmt(s['min'])}–{_fmt(s['max'])}]"
    return _fmt(s["median"])


def ratios(rows: dict[str, dict[str, Any]], metric: str, higher: bool) -> dict[str, tuple[float | None, float | None]]:
    """Per system: (speed vs torch, speed vs the best peer); > 1 means faster."""
    med = {n: r[metric]["median"] for n, r in rows.items() if r.get(metric) and r[metric]["median"]}
    peers = {n: v for n, v in med.items() if not is_bowrt(n)}
    best = (max if higher else min)(peers.values()) if peers else None
    out = {}
    for n, v in med.items():
        def speed(ref: float | None) -> float | None:
            if ref is None:
                return None
            return v / ref if higher else ref / v

        out[n] = (speed(med.get(REFERENCE)), speed(best))
    return out


def paired(rows: dict[str, dict[str, Any]], higher: bool) -> dict[str, dict[str, Any]]:
    """Per bowrt system: its speed over the best peer *of the same round*, summarized over the
    rounds (``rows[n]["rounds"]``: the metric per round, in round order). This VM's speed
    drifts between minutes; a round runs every system within a few minutes, so the paired
    ratio is steadier than a ratio of medians taken from different rounds."""
    peers = [r["rounds"] for n, r in rows.items() if not is_bowrt(n) and r.get("rounds")]
    out = {}
    for n, r in rows.items():
        if not is_bowrt(n) or not r.get("rounds") or not peers:
            continue
        per_round = []
        for k, v in enumerate(r["rounds"]):
            same = [p[k] for p in peers if len(p) > k and p[k]]
            if same and v:
                best = max(same) if higher else min(same)
                per_round.append(v / best if higher else best / v)
        out[n] = summarize(per_round)
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(res: dict[str, Any]) -> str:
    """``results.md``: every table of the run, the systems that could not run in one section."""
    out = _header_md(res) + _systems_md(res["systems"]) + _left_out_md(res["systems"])
    for wl, metric, label, higher in SPEED_TABLES:
        out += _speed_md(res["workloads"].get(wl), wl, metric, label, higher)
        out += _buckets_md(res["workloads"].get("corpus")) if wl == "corpus" else []
    out += _concurrent_md(res["workloads"].get("concurrent"))
    out += _overhead_md(res.get("overhead"))
    out += _workers_md(res)
    out += _accuracy_md(res.get("accuracy"))
    out += _frontier_md(res)
    out += _ceilings_md(res.get("ceilings") or {})
    notes = res["meta"].get("notes")
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def host_flags(machine: dict[str, Any]) -> list[str]:
    return [f for f, on in machine.get("cpu_flags", {}).items() if on]


def _header_md(res: dict[str, Any]) -> list[str]:
    meta, machine = res["meta"], res["machine"]
    int8 = machine.get("int8", {})
    return [
        "# bowrt benchmark",
        "",
        f"- machine: {machine.get('processor')}, {machine.get('physical_cores')} physical cores "
        f"({machine.get('logical_cpus')} logical), {machine.get('memory_gb')} GB; flags: {', '.join(host_flags(machine)) or '-'}",
        f"- host int8 ISA: {int8.get('int8_isa', '?')} ({int8.get('int8_accumulation', '?')} accumulation, measured); "
        "every accuracy figure below was measured on this host",
        f"- model: {meta['model']['folder']} ({meta['model']['layers']} layers, hidden {meta['model']['hidden']}); "
        f"pooling {meta['model']['pooling']}, normalize {meta['model']['normalize']}",
        f"- {meta['rounds']} round(s) after a warm-up round, interleaved (each round runs every system on every "
        f"workload; batch-1 latency in turns of a few calls); {meta['threads']} thread(s) per system; quick: {meta['quick']}; "
        f"took {_fmt(meta.get('duration_s'))} s",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items() if v),
        *[f"\n> **{n}**" for n in meta.get("notes", []) if n.startswith("WARNING")],
        "",
        "Cells: median [min–max] over rounds. `x torch`: speed relative to PyTorch fp32 eager; `x best peer`: "
        "relative to the fastest non-bowrt system (medians); `x best peer, paired`: per round, against the fastest "
        "non-bowrt system of that round, then median [min–max] over rounds; `x best peer, per call` (batch 1): per "
        "round, the median over calls of that peer's time over bowrt's for the same query in the same turn; "
        "`% ceiling`: useful FLOP/s (padding not counted) over the measured GEMM rate of the system's precision.",
    ]


def _systems_md(systems: dict[str, Any]) -> list[str]:
    rows = []
    for n, s in systems.items():
        if s["status"] != "ok":
            continue
        mem = s.get("memory") or {}
        rows.append([n, s.get("precision", "-"), s.get("batching", "-"), "yes" if s.get("sorts_by_length") else "no",
                     _fmt(s["model_bytes"] / 2**20) if s.get("model_bytes") else "-",
                     _fmt(mem.get("cold_start_s")), _fmt(mem.get("peak_rss_mb"))])
    return ["", "## Systems", ""] + _table(["system", "precision", "batching", "sorts by length", "model MB",
                                            "cold start s", "peak RSS MB"], rows)


def left_out(systems: dict[str, Any]) -> dict[str, list[str]]:
    """The systems that did not run, grouped by what would bring them in: ``{how: [names]}``.
    ``how`` is the fix (a command) where there is one, else the first clause of the reason."""
    groups: dict[str, list[str]] = {}
    for n, s in systems.items():
        if s["status"] == "ok":
            continue
        how = s.get("fix") or str(s.get("reason", "?")).split(": ")[0].split("; ")[0]
        groups.setdefault(how, []).append(n)
    return groups


def left_out_line(systems: dict[str, Any]) -> str | None:
    """One line for every system that did not run: ``a, b (fix); c (why)``; None when all ran."""
    groups = left_out(systems)
    return "; ".join(f"{', '.join(names)} ({how})" for how, names in groups.items()) if groups else None


def _left_out_md(systems: dict[str, Any]) -> list[str]:
    rows: dict[tuple[str, str], list[str]] = {}
    for n, s in systems.items():
        if s["status"] != "ok":
            rows.setdefault((str(s.get("reason")), s.get("fix") or "-"), []).append(n)
    if not rows:
        return []
    return ["", "## Not run here", ""] + _table(["systems", "why", "to run them"], [
        [", ".join(names), why, f"`{fix}`" if fix != "-" else fix] for (why, fix), names in rows.items()])


def _speed_md(w: dict[str, Any] | None, wl: str, metric: str, label: str, higher: bool) -> list[str]:
    if not w or not w.get("results"):
        return []
    rat, pair = ratios(w["results"], metric, higher), paired(w["results"], higher)
    rows = []
    for n, r in w["results"].items():
        extra = [_cell(r.get("p99_ms"))] if wl == "latency" else [_cell(r.get("tokens_per_s"))]
        per_call = [_cell(r.get("paired_per_call"))] if wl == "latency" else []
        frac = r.get("ceiling_fraction")
        vs_t, vs_b = rat.get(n, (None, None))
        rows.append([n, _cell(r.get(metric)), *extra, _fmt(vs_t) if vs_t else "-", _fmt(vs_b) if vs_b else "-",
                     _cell(pair.get(n)), *per_call, _percent(frac)])
    second = "p99 ms" if wl == "latency" else "tokens/s"
    return ["", f"## {label}", "", w.get("description", ""), ""] + _table(
        ["system", "p50 ms" if wl == "latency" else "passages/s", second, "x torch", "x best peer",
         "x best peer, paired", *(["x best peer, per call"] if wl == "latency" else []), "% ceiling"], rows)


def _buckets_md(w: dict[str, Any] | None) -> list[str]:
    """The corpus rate by passage length: a column per bucket, then bowrt's paired ratio per bucket,
    then each system's GEMM-ceiling fraction per bucket."""
    buckets = (w or {}).get("buckets") or {}
    if not buckets:
        return []
    names = list(dict.fromkeys(n for b in buckets.values() for n in b["results"]))
    rows = []
    for n in names:
        got = [b["results"].get(n, {}) for b in buckets.values()]
        rows.append([n, *(_cell(r.get("items_per_s")) for r in got), *(_cell(r.get("paired")) for r in got),
                     *(_percent(r.get("ceiling_fraction")) for r in got)])
    header = [f"{lb} tokens ({b['passages']}), passages/s" for lb, b in buckets.items()]
    return ["", "## Corpus by passage length (passages/s)", "", w.get("buckets_description", ""), ""] + _table(
        ["system", *header, *(f"{lb}: x best peer, paired" for lb in buckets), *(f"{lb}: % ceiling" for lb in buckets)],
        rows)


def _percent(frac: float | None) -> str:
    return f"{100 * frac:.1f}%" if frac is not None else "-"


def _frontier_md(res: dict[str, Any]) -> list[str]:
    """Links to the frontier plots that were drawn (a system with speed and accuracy figures is a point)."""
    alt = {"frontier_corpus.png": "corpus rate against accuracy", "frontier_latency.png": "batch-1 latency against accuracy"}
    drawn = list(frontier.figures(res))
    if not drawn:
        return []
    return ["", "## Speed against accuracy", "",
            f"Every system with both a speed and an accuracy figure; {frontier.FRONTIER_X}. bowrt's variants (orange) are "
            "joined in order of min cosine (bowrt's frontier), peers in blue.", ""] + [
        line for name in drawn for line in (f"![{alt[name]}]({name})", "")][:-1]


def _ceilings_md(c: dict[str, Any]) -> list[str]:
    if not c:
        return []
    rows = [[p, lib, _fmt(v)] for p in ("fp32", "bf16", "int8") for lib, v in c.get(p, {}).items()]
    return ["", "## GEMM ceilings (same run)", "",
            f"Shape [M, K] x [K, N] = {c.get('shape_mkn')} (the model's FFN), {c.get('threads')} thread(s); "
            "best of repeated calls.", ""] + _table(["precision", "library", "GFLOP/s (int8: GOP/s)"], rows)


def _concurrent_md(w: dict[str, Any] | None) -> list[str]:
    if not w or not w.get("results"):
        return []
    out = ["", "## Concurrent clients (closed loop, single queries)", "", w.get("description", ""), ""]
    rows = []
    for n, by_mode in w["results"].items():
        for clients in w["clients"]:
            b, d = by_mode.get("batched", {}).get(str(clients), {}), by_mode.get("direct", {}).get(str(clients), {})
            gain = None
            if b.get("rps", {}).get("median") and d.get("rps", {}).get("median"):
                gain = b["rps"]["median"] / d["rps"]["median"]
            rows.append([n, str(clients), _cell(b.get("rps")), _cell(b.get("p50_ms")), _cell(b.get("p99_ms")),
                         _fmt(b.get("mean_batch_size")), _cell(d.get("rps")), _cell(d.get("p50_ms")), _cell(d.get("p99_ms")),
                         _fmt(gain)])
    return out + _table(["system", "clients", "batched req/s", "p50 ms", "p99 ms", "mean batch", "direct req/s", "p50 ms",
                         "p99 ms", "batched / direct"], rows)


def _overhead_md(ov: dict[str, Any] | None) -> list[str]:
    if not ov:
        return []
    out = ["", "## Runtime overhead at batch 1 (bowrt)", "",
           "From `Encoder.encode_timed` over the latency calls (medians, ms). overhead = tokenize + batch + post "
           "over end-to-end; 'outside stages' is end-to-end minus all four stages (validation, call overhead).", ""]
    rows = []
    for n, o in ov.items():
        rows.append([n, _fmt(o["e2e_ms"]), _fmt(o["inference_ms"]), _fmt(o["tokenize_ms"]), _fmt(o["batch_ms"]),
                     _fmt(o["post_ms"]), _fmt(o["outside_ms"]), f"{100 * o['overhead_fraction']:.2f}%",
                     "yes" if o["within_target"] else "**no**"])
    return out + _table(["system", "end-to-end", "inference", "tokenize", "batch", "post", "outside stages", "overhead",
                         "<= 5%"], rows)


def _workers_md(res: dict[str, Any]) -> list[str]:
    """Which systems ran in the peer environment's worker, and what the round trip added (not in their figures)."""
    workers = {n: s["runs_in"] for n, s in res["systems"].items() if s.get("runs_in", "this process") != "this process"}
    if not workers:
        return []
    env = res.get("peer_env") or {}
    out = ["", "## Peers in the peer environment", "",
           f"Run in a worker process of the peer environment ({env.get('venv', '?')}, built {env.get('built', '?')}); "
           "their figures are the time inside the worker, the IPC round trip's extra is shown here and not counted.", ""]
    ipc = res.get("ipc") or {}
    rows = [[n, where, *(_fmt(ipc.get(n, {}).get(wl, {}).get("median_ms")) for wl in ("latency", "corpus"))]
            for n, where in workers.items()]
    return out + _table(["system", "runs in", "IPC ms per call, latency (median)", "IPC ms per call, corpus"], rows)


def _accuracy_md(acc: dict[str, Any] | None) -> list[str]:
    if not acc:
        return []
    out = ["", "## Accuracy next to speed", "", acc.get("description", ""), ""]
    rows = []
    for n, a in acc.get("results", {}).items():
        if a.get("status") != "ok":
            rows.append([n, "-", "-", "-", "-", f"not available: {a.get('reason')}"])
            continue
        rows.append([n, f"{a['min_cosine']:.6f}", f"{a['mean_cosine']:.6f}", f"{a['overlap_at_10']:.3f}",
                     f"{a['batch_invariance_min_cosine']:.6f}", ""])
    return out + _table(["system", "min cosine", "mean cosine", "overlap@10", "alone vs in one batch, min cosine", "note"], rows)


def write_report(res: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write results.json, results.md and the plots into ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md"}
    paths["json"].write_text(json.dumps(res, indent=1, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(res), encoding="utf-8")
    for p in plots(res, out):
        paths[p.stem] = p
    return paths
