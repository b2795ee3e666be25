"""Run the benchmark: models and bundles, systems, interleaved rounds, then every figure in one dict.

Order of a run: resolve the model and bundles (exported into the cache once, untimed)
-> describe the machine and time the GEMM ceilings -> generate the texts -> load every
system (one that cannot run is recorded with its reason and fix) -> one warm-up round
(excluded; it also refines the duration estimate) -> N measured rounds, interleaved
(:mod:`benchmarks.harness.rounds`) -> cold start and peak RSS, one fresh process per
system -> accuracy on MiniLM -> report, and a summary of at most 40 lines on stdout.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from benchmarks.harness import budget, coldstart, gather, machine, models, peer_env, resolve, rounds, systems, usage, workloads
from benchmarks.harness.config import PAUSE_S, WORKLOADS, BenchConfig
from benchmarks.harness.quiet import LOG_NAME, quiet_libraries
from benchmarks.harness.report import left_out_line, write_report
from benchmarks.harness.spec import SystemSpec, Unavailable, is_bowrt
from benchmarks.harness.summary import summary
from bowrt.errors import OptionError

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _model_config(model_dir: Path | None, first_bundle: Path, notes: list[str]) -> dict[str, Any]:
    """The model's shape for FLOP counts: its config.json, else what the manifest says."""
    if model_dir:
        return models.read_config(model_dir)
    from bowrt.bundle import verify_bundle

    m = verify_bundle(first_bundle)
    notes.append("no model folder: FLOPs assume intermediate_size = 4 x hidden")
    return {"hidden_size": m.hidden_size, "num_hidden_layers": m.num_layers, "intermediate_size": 4 * m.hidden_size}


def _check(cfg: BenchConfig) -> None:
    for w in cfg.workloads:
        if w not in WORKLOADS:
            raise OptionError(f"unknown workload {w!r}; valid: {', '.join(WORKLOADS)}")
    systems.expand_against(list(cfg.against))  # unknown names fail now, before any export


def load_systems(names: list[str], specs: dict[str, SystemSpec], info: dict[str, Any], out: Path, log: Log) -> dict[str, Any]:
    """Prepare and load each system (its libraries' output into ``third_party.log``); failures go to ``info``."""
    loaded: dict[str, Any] = {}
    work = models.cache_dir() / "peers"
    for n in names:
        log(f"loading {n} ...")
        try:
            specs[n], loaded[n] = systems.bring_up(specs[n], work, out / LOG_NAME)
        except Unavailable as e:
            info[n] = resolve.unavailable_info(e)
            log(f"  not available: {e}")
            continue
        s = loaded[n]
        info[n] = {"status": "ok", "precision": systems.precision(n), "batching": s.batching,
                   "sorts_by_length": s.sorts_by_length, "model_bytes": s.model_bytes,
                   "runs_in": getattr(s, "where", "this process")}
    if not loaded:
        raise RuntimeError("no system could run: " + "; ".join(f"{n}: {i['reason']}" for n, i in info.items()))
    return loaded


def _choose(cfg: BenchConfig, specs: dict[str, SystemSpec], texts: workloads.Texts, config: dict[str, Any],
            ceilings: dict[str, Any], log: Log, notes: list[str]) -> tuple[list[str], dict[str, Any], BenchConfig, workloads.Texts]:
    """The systems to load (those that can run; --quick: those that fit its budget) and what became of the rest."""
    info = resolve.not_runnable(specs)
    if info:
        log(f"not available here: {left_out_line(info)}")
    names = [n for n in specs if n not in info]
    if cfg.quick:
        kept, cfg, texts = budget.fit_quick(cfg, names, texts, config, budget.guessed_rates(specs, ceilings), log, notes)
        info.update({n: {"status": "skipped", "reason": "left out by --quick (time budget)", "fix": "without --quick"}
                     for n in names if n not in kept})
        names = kept
    return names, info, cfg, texts


def _memory(cfg: BenchConfig, loaded: dict[str, Any], specs: dict[str, SystemSpec], texts: workloads.Texts,
            info: dict[str, Any], notes: list[str], log: Log) -> None:
    log("cold start and peak memory, one fresh process per system ...")
    mem_names = [n for n in loaded if not cfg.quick or is_bowrt(n) or n == "torch"]
    if len(mem_names) < len(loaded):
        notes.append("--quick: cold start and peak RSS measured for torch and bowrt only")
    # The corpus's first 256 passages hold its longest batches for every system (fastembed's batch is 256).
    payload = {} if cfg.quick else {"batch32x128": texts.batch, "corpus[:256]": texts.corpus[:256]}
    for n, m in coldstart.measure({n: specs[n] for n in mem_names}, payload, log).items():
        info[n]["memory"] = m


def _accuracy(names: list[str], threads: int, out: Path, log: Log, quick: bool) -> dict[str, Any]:
    from benchmarks.harness.accuracy import run_accuracy

    log("accuracy against PyTorch fp32 on MiniLM (real weights) ...")
    try:
        return run_accuracy(names, threads, models.cache_dir() / "peers", log, quick, out / LOG_NAME)
    except Exception as e:  # accuracy is a section of the report; its failure must not lose the speed figures
        log(f"  accuracy failed: {type(e).__name__}: {e}")
        return {"description": f"failed: {type(e).__name__}: {e}", "results": {}}


def _notes(specs: dict[str, SystemSpec], cfg: BenchConfig) -> list[str]:
    qint8 = specs.get("ort-qint8")
    return [
        "all systems run in one process, loaded from the same local folder (HF_HUB_OFFLINE=1); "
        f"a {PAUSE_S} s pause between systems lets spinning ORT/OpenMP worker threads go idle",
        "% ceiling counts useful FLOPs only (no padding), 2 x linear weights x tokens + attention 4 L^2 H per layer",
        *(["fastembed runs a plain feature-extraction ONNX export (last_hidden_state, no fusions) of the same folder, "
           "as optimum-cli would produce; fastembed cannot download here"] if "fastembed" in specs else []),
        *([f"ort-qint8 is a reconstruction, not sentence-transformers: it stands in for st-onnx-int8 (sentence-transformers' "
           f"int8 model with the {qint8.files.get('config', 'host')} config, the one for this host's ISA; it needs optimum): "
           "the same export and the same ONNXQuantizer settings, run with SentenceTransformer.encode's batching "
           "(benchmarks/harness/adapters/ort_qint8.py)"] if qint8 else []),
        "peak RSS: a fresh process per system: load, one query" + (" (--quick)" if cfg.quick else
                                                                   ", the 32x128 batch, the corpus's first 256 passages"),
    ]


def _share_warning(share: usage.CpuShare, notes: list[str], log: Log) -> float | None:
    others = share.others_fraction()
    if others is not None and others > 0.05:
        notes.insert(0, f"WARNING: other processes used {100 * others:.0f}% of the CPUs during this run "
                        f"(load average {share.load_at_start:.1f} at the start): every figure is slowed and noisier")
        log(notes[0])
    return others


def _peer_env_info() -> dict[str, Any] | None:
    """What the peer environment holds (pip freeze), when it is built."""
    info = peer_env.ready_info()
    return {"venv": str(peer_env.env_dir()), **info} if info else None


def _timed(log: Log, t_start: float) -> Log:
    def timed(msg: str) -> None:  # every line with the time since start, so slow phases show
        log(f"[{time.time() - t_start:6.1f}s] {msg}")

    return timed


@dataclass
class Plan:
    """What the setup phase decided, handed to the measuring phase."""

    cfg: BenchConfig
    log: Log
    t_start: float
    share: usage.CpuShare
    threads: int
    model_dir: Path | None
    bundles: dict[str, Path]
    specs: dict[str, SystemSpec]
    config: dict[str, Any]
    ceilings: dict[str, Any]
    texts: workloads.Texts
    flops: dict[str, float]
    info: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def run(cfg: BenchConfig, log: Log = _stderr) -> dict[str, Any]:
    """The whole run (see the module docstring); writes the report into ``cfg.out`` and returns the result."""
    from bowrt.runtime.host import physical_cores

    t_start, share = time.time(), usage.CpuShare()
    log = _timed(log, t_start)
    quiet_libraries()
    _check(cfg)
    (Path(cfg.out) / LOG_NAME).unlink(missing_ok=True)
    notes: list[str] = []
    threads = cfg.threads or physical_cores()
    model_dir, bundles = resolve.resolve_model(cfg, log, notes)
    specs = resolve.make_specs(cfg, model_dir, bundles, threads)
    first = next(iter(bundles.values()))
    config = _model_config(model_dir, first, notes)
    log(f"machine and GEMM ceilings ({threads} threads) ...")
    ceilings = machine.gemm_ceilings(config, threads, tokens=1024 if cfg.quick else 2048, min_s=0.3 if cfg.quick else 1.0)
    log(f"  best fp32 {ceilings['best']['fp32']} GFLOP/s, bf16 {ceilings['best']['bf16']}, int8 {ceilings['best']['int8']} GOP/s")
    texts = workloads.make_texts(first / "tokenizer.json", queries=max(cfg.latency_calls, 256), corpus=cfg.corpus_size, seed=cfg.seed)
    names, info, cfg, texts = _choose(cfg, specs, texts, config, ceilings, log, notes)
    flops = budget.workload_flops(config, texts, cfg)
    log(f"rough estimate before loading: {budget.estimate_s(cfg, names, flops, budget.guessed_rates(specs, ceilings)) / 60:.1f} min "
        f"for {len(names)} systems")
    plan = Plan(cfg, log, t_start, share, threads, model_dir, bundles, specs, config, ceilings, texts, flops, info, notes)
    return _measure(plan, load_systems(names, specs, info, Path(cfg.out), log))


def _measure(p: Plan, loaded: dict[str, Any]) -> dict[str, Any]:
    """Warm-up, rounds, memory and accuracy; then the result is written and summarized."""
    cfg, log = p.cfg, p.log
    log("warm-up round (not counted) ...")
    warm = rounds.warm_up(loaded, p.info, p.texts, cfg, log)
    rate, lat_s = rounds.warm_rates(warm, loaded, p.config, p.texts, p.flops)
    est = budget.estimate_s(cfg, list(loaded), p.flops, {**budget.guessed_rates(p.specs, p.ceilings), **rate}, lat_s)
    log(f"estimated duration: {est / 60:.1f} min ({cfg.n_rounds} round(s) x {len(loaded)} systems; "
        f"latency {cfg.latency_calls} calls, corpus {cfg.corpus_size} passages)")
    rec = rounds.measured_rounds(loaded, p.info, p.texts, cfg, log)
    results_wl = gather.gather(rec, p.texts, p.flops, p.ceilings, cfg)
    if cfg.memory:
        _memory(cfg, loaded, p.specs, p.texts, p.info, p.notes, log)
    acc = _accuracy([n for n in p.specs if p.info.get(n, {}).get("status") == "ok"], p.threads, Path(cfg.out), log,
                    cfg.quick) if cfg.accuracy else None
    for s in loaded.values():  # peer workers exit now, not at interpreter exit
        if hasattr(s, "close"):
            s.close()
    res = _result(p, est, results_wl, acc, rec)
    paths = write_report(res, cfg.out)
    log(f"wrote {', '.join(str(x) for x in paths.values())} in {res['meta']['duration_s']:.0f} s")
    print("\n".join(summary(res, str(cfg.out))), flush=True)
    return res


def _result(p: Plan, est: float, results_wl: dict[str, Any], acc: dict[str, Any] | None,
            rec: dict[str, Any]) -> dict[str, Any]:
    """The one dict ``results.json`` holds (``report.py`` only reads it)."""
    p.notes += _notes(p.specs, p.cfg)
    others = _share_warning(p.share, p.notes, p.log)
    meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": p.cfg.quick, "rounds": p.cfg.n_rounds,
            "threads": p.threads, "device": p.cfg.device, "workloads": list(p.cfg.workloads),
            "model": _model_meta(p), "texts": p.texts.describe(), "seed": p.cfg.seed, "estimated_s": est,
            "notes": p.notes, "other_processes_cpu_fraction": others, "load_average_at_start": p.share.load_at_start,
            "duration_s": time.time() - p.t_start}
    return {
        "schema": "bowrt-bench/1", "meta": meta,
        "machine": machine.describe(), "versions": machine.versions(), "ceilings": p.ceilings,
        "systems": {n: p.info[n] for n in p.specs if n in p.info},  # the report lists systems in command-line order
        "workloads": results_wl, "accuracy": acc, "peer_env": _peer_env_info(),
        "overhead": {n: workloads.overhead(calls) for n, calls in rec.get("timings", {}).items() if calls},
        "ipc": rounds.ipc_summary(rec.get("ipc", {})),
    }


def _model_meta(p: Plan) -> dict[str, Any]:
    first = p.specs[next(iter(p.bundles))]
    return {"folder": str(p.model_dir) if p.model_dir else None, "hidden": p.config["hidden_size"],
            "layers": p.config["num_hidden_layers"], "intermediate": p.config.get("intermediate_size"),
            "pooling": first.pooling, "normalize": first.normalize, "bundles": {n: str(b) for n, b in p.bundles.items()}}
