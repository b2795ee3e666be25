"""Run the benchmark: models and bundles, systems, interleaved rounds, then every figure in one dict.

Order of a run: resolve the model and bundles (exported into the cache once,
untimed) -> describe the machine and time the GEMM ceilings -> generate the
texts -> load every system (a peer that cannot run is recorded with its
reason) -> one warm-up round (excluded; it also refines the duration estimate)
-> N measured rounds, interleaved: in round r every system runs every workload
once, the system order rotating by one each round, so drift (thermal, other
tenants) hits all systems alike -> cold start and peak RSS, one fresh process
per system -> accuracy on MiniLM -> report.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks import coldstart, machine, models, st_int8, systems, workloads
from benchmarks.report import summarize, write_report
from bowrt.errors import OptionError

WORKLOADS = ("latency", "batch32x128", "corpus", "concurrent")
DEFAULT_AGAINST = ("torch", "torch-bf16", "st", "st-onnx", "ort-qint8", "optimum", "fastembed", "ct2", "openvino", "llama.cpp")
CLIENTS = (1, 4, 16, 64)
MODES = ("batched", "direct")
LATENCY_WARM_CALLS = 3  # dropped at the start of every latency run
PAUSE_S = 0.2  # between systems: lets the previous one's spinning worker threads go idle
QUICK_BUDGET_S = 120.0  # rounds + memory + accuracy; imports, loading and warm-up (~1 min) come on top
QUICK_MIN_CORPUS = 32
WARM_CORPUS = 16  # passages of the corpus run in the warm-up (FLOP-normalized for the estimate)
QUICK_DROP_ORDER = ("llama.cpp", "openvino-fp32", "ct2-fp32", "openvino-int8", "st-onnx-int8", "st-onnx-O3", "st-onnx", "ort-qint8", "optimum", "torch-bf16", "fastembed", "st")
# Rough share of the GEMM ceiling a system reaches, for the estimate made before anything ran.
GUESSED_EFFICIENCY = {"fp32": 0.5, "bf16": 0.3, "int8": 0.3, "fp16": 0.3}
Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    bundles: tuple[str, ...] = ()
    model: str | None = None
    against: tuple[str, ...] = DEFAULT_AGAINST
    workloads: tuple[str, ...] = WORKLOADS
    rounds: int | None = None  # default: 3, quick: 1
    quick: bool = False
    threads: int | None = None
    out: str = "results"
    gates: tuple[str, ...] = ()
    device: str = "cpu"
    accuracy: bool = True
    memory: bool = True
    seed: int = 1234
    corpus: int | None = None  # passages in the corpus workload (default 1000; --quick: 200, fewer if needed)

    @property
    def n_rounds(self) -> int:
        return self.rounds or (1 if self.quick else 3)

    @property
    def latency_calls(self) -> int:
        return 30 if self.quick else 200

    @property
    def corpus_size(self) -> int:
        return self.corpus or (200 if self.quick else 1000)

    @property
    def concurrent_s(self) -> float:
        return 1.0 if self.quick else 3.0


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: no hub here, and none wanted in a benchmark
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as tf_logging

        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()
    except ImportError:
        pass


# --- setup --------------------------------------------------------------------------------
def resolve_model(cfg: BenchConfig, log: Log, notes: list[str]) -> tuple[Path | None, dict[str, Path]]:
    """(model folder for the peers, {system name: bundle}) from the command line, exporting when needed."""
    from bowrt.bundle import verify_bundle

    model_dir = Path(cfg.model).expanduser() if cfg.model else None
    if model_dir is not None and not (model_dir / "config.json").is_file():
        raise OptionError(f"--model {cfg.model!r} is not a local Hugging Face model folder (no config.json)")
    if cfg.bundles:
        bundles: dict[str, Path] = {}
        for b in cfg.bundles:
            variant = verify_bundle(b).variant
            name = f"bowrt-{variant}" if f"bowrt-{variant}" not in bundles else f"bowrt-{variant}-{len(bundles)}"
            bundles[name] = Path(b)
        if model_dir is None:
            src = Path(verify_bundle(cfg.bundles[0]).source_model)
            model_dir = src if (src / "config.json").is_file() else None
        return model_dir, bundles
    gates = list(cfg.gates) or None
    if model_dir is None:
        model_dir = models.twin_folder(log)
        gates = gates or models.RANDOM_WEIGHT_GATES
        notes.append("model: the bert-base twin (BERT-base shape, seeded random weights): speed and size only; "
                     f"its int8 bundle was exported with gates {models.RANDOM_WEIGHT_GATES}")
    variants = ("fp32", "int8") + (("fp16",) if cfg.device == "cuda" else ())
    paths = models.ensure_bundles(model_dir, variants, gates, log)
    return model_dir, {f"bowrt-{v}": p for v, p in paths.items()}


def make_specs(cfg: BenchConfig, model_dir: Path | None, bundles: dict[str, Path], threads: int) -> dict[str, systems.SystemSpec]:
    from bowrt.bundle import verify_bundle

    m = verify_bundle(next(iter(bundles.values())))
    base = systems.SystemSpec(
        "torch", model_dir=str(model_dir) if model_dir else None, pooling=m.pooling, normalize=m.normalize,
        threads=threads, device=cfg.device, query_max_length=m.text.query_max_length,
        passage_max_length=m.text.passage_max_length, query_prefix=m.text.query_prefix, passage_prefix=m.text.passage_prefix,
    )
    specs = {n: replace(base, name=n) for n in systems.expand_against(list(cfg.against))}
    specs.update({n: replace(base, name=n, bundle=str(p), model_dir=None) for n, p in bundles.items()})
    return specs


def _rates(specs: dict[str, systems.SystemSpec], ceilings: dict[str, Any]) -> dict[str, float]:
    fp32 = machine.ceiling_for(ceilings, "fp32") or 50.0
    return {n: (machine.ceiling_for(ceilings, s.precision) or fp32) * 1e9 * GUESSED_EFFICIENCY.get(s.precision, 0.3)
            for n, s in specs.items()}


def estimate_s(cfg: BenchConfig, names: list[str], flops: dict[str, float], rate: dict[str, float],
               latency_s: dict[str, float] | None = None) -> float:
    """Seconds the measured rounds, the memory phase and accuracy should take (rates in FLOP/s)."""
    per_round = mem = 0.0
    for n in names:
        lat = (latency_s or {}).get(n) or max(flops["latency"] / rate[n], 0.002)
        heavy = (flops["batch32x128"] * ("batch32x128" in cfg.workloads) + flops["corpus"] * ("corpus" in cfg.workloads)) / rate[n]
        per_round += lat * (cfg.latency_calls + LATENCY_WARM_CALLS) * ("latency" in cfg.workloads) + heavy + PAUSE_S
        if n.startswith("bowrt-") and "concurrent" in cfg.workloads:
            per_round += len(CLIENTS) * len(MODES) * (cfg.concurrent_s + 0.1)
        # A fresh interpreter: torch and transformers take ~10 s to import on a small machine.
        if cfg.quick and not n.startswith("bowrt-") and n != "torch":
            continue  # --quick: cold start for torch and bowrt only
        mem_flops = 0 if cfg.quick else flops["batch32x128"] + flops["corpus"] * min(1.0, 256 / cfg.corpus_size)
        mem += (2.0 if n.startswith("bowrt-") else 10.0) + mem_flops / rate[n]
    return per_round * cfg.n_rounds + mem * cfg.memory + (30.0 if cfg.quick else 120.0) * cfg.accuracy


def fit_quick(cfg: BenchConfig, names: list[str], texts: workloads.Texts, config: dict[str, Any],
              rate: dict[str, float], log: Log, notes: list[str]) -> tuple[list[str], BenchConfig, workloads.Texts]:
    """Drop peers (least central first), then shrink the corpus, until the quick run fits its budget; say which."""
    flops = workload_flops(config, texts, cfg)
    dropped = []
    for victim in QUICK_DROP_ORDER:
        if estimate_s(cfg, names, flops, rate) <= QUICK_BUDGET_S:
            break
        if victim in names:
            names = [n for n in names if n != victim]
            dropped.append(victim)
    if dropped:
        notes.append(f"--quick: left out {', '.join(dropped)} to stay under ~3 minutes (run without --quick for all)")
        log(notes[-1])
    n = full = cfg.corpus_size
    while n > QUICK_MIN_CORPUS and estimate_s(cfg, names, flops, rate) > QUICK_BUDGET_S:
        n = max(QUICK_MIN_CORPUS, n // 2)
        cfg = replace(cfg, corpus=n)
        texts = replace(texts, corpus=texts.corpus[:n], corpus_tokens=texts.corpus_tokens[:n])
        flops = workload_flops(config, texts, cfg)
    if n < full:
        notes.append(f"--quick: corpus cut to {n} passages for this model size")
        log(notes[-1])
    return names, cfg, texts


def workload_flops(config: dict[str, Any], texts: workloads.Texts, cfg: BenchConfig) -> dict[str, float]:
    """FLOPs of one call of each workload (latency: per single-query call, on average)."""
    q = texts.query_tokens[: cfg.latency_calls]
    return {"latency": machine.encoder_flops(config, q) / len(q),
            "batch32x128": machine.encoder_flops(config, texts.batch_tokens),
            "corpus": machine.encoder_flops(config, texts.corpus_tokens)}


# --- one workload on one system ----------------------------------------------------------------
def run_workload(name: str, sys_: Any, wl: str, texts: workloads.Texts, cfg: BenchConfig, rec: dict[str, Any],
                 warm: bool = False) -> None:
    calls = getattr(sys_, "calls", None)  # a peer worker's (round trip s, inside the worker s) per encode
    if calls is not None:
        calls.clear()
    _run_workload(name, sys_, wl, texts, cfg, rec, warm)
    if calls:
        inside_worker(name, wl, rec, calls)


def inside_worker(name: str, wl: str, rec: dict[str, Any], calls: list[tuple[float, float]]) -> None:
    """A worker system's figure: the time inside the worker (what the peer costs in a user's own process);
    the round trip's extra (pipes, .npy) goes to ``rec["ipc"]``, reported next to it."""
    if wl == "latency":
        rec[wl][name][-1] = [inner * 1000.0 for _, inner in calls[LATENCY_WARM_CALLS:]]
    elif wl in ("batch32x128", "corpus"):
        rec[wl][name][-1] = calls[-1][1]
    else:
        return
    rec.setdefault("ipc", {}).setdefault(name, {}).setdefault(wl, []).extend(
        (outer - inner) * 1000.0 for outer, inner in calls)


def ipc_summary(ipc: dict[str, Any]) -> dict[str, Any]:
    """Per worker system and workload: median milliseconds a call spent outside the worker (the IPC)."""
    return {n: {wl: {"median_ms": float(np.median(v)), "max_ms": float(np.max(v)), "calls": len(v)}
                for wl, v in by_wl.items()} for n, by_wl in ipc.items()}


def _run_workload(name: str, sys_: Any, wl: str, texts: workloads.Texts, cfg: BenchConfig, rec: dict[str, Any],
                  warm: bool) -> None:
    if wl == "latency":
        calls = 5 if warm else cfg.latency_calls + LATENCY_WARM_CALLS
        if hasattr(sys_, "record"):
            sys_.record, sys_.log = True, []
        samples = workloads.latency(sys_.encode, texts.queries, calls)
        if hasattr(sys_, "record"):
            sys_.record = False
            rec.setdefault("timings", {}).setdefault(name, []).extend(sys_.log[LATENCY_WARM_CALLS:])
        rec.setdefault(wl, {}).setdefault(name, []).append(samples[LATENCY_WARM_CALLS:])
    elif wl == "batch32x128":
        passages = texts.batch[:4] if warm else texts.batch
        rec.setdefault(wl, {}).setdefault(name, []).append(workloads.throughput(sys_.encode, passages))
    elif wl == "corpus":
        passages = texts.corpus[:WARM_CORPUS] if warm else texts.corpus
        rec.setdefault(wl, {}).setdefault(name, []).append(workloads.throughput(sys_.encode, passages))
    elif wl == "concurrent" and hasattr(sys_, "encoder"):
        for clients in (4,) if warm else CLIENTS:
            for mode in MODES:
                r = workloads.concurrent(sys_.encoder, texts.queries, clients, 0.3 if warm else cfg.concurrent_s, mode)
                rec.setdefault(wl, {}).setdefault(name, {}).setdefault(mode, {}).setdefault(str(clients), []).append(r)


def _gather(rec: dict[str, Any], texts: workloads.Texts, flops: dict[str, float], specs: dict[str, systems.SystemSpec],
            ceilings: dict[str, Any], cfg: BenchConfig) -> dict[str, Any]:
    def frac(name: str, flop: float, seconds: float | None) -> float | None:
        ceil = machine.ceiling_for(ceilings, specs[name].precision)
        return flop / seconds / (ceil * 1e9) if ceil and seconds else None

    out: dict[str, Any] = {}
    if "latency" in rec:
        res = {}
        for n, rounds in rec["latency"].items():
            per_round = [float(np.percentile(r, 50)) for r in rounds]
            p50 = summarize(per_round)
            res[n] = {"p50_ms": p50, "rounds": per_round,
                      "p99_ms": summarize([float(np.percentile(r, 99)) for r in rounds]),
                      "mean_ms": summarize([float(np.mean(r)) for r in rounds]),
                      "samples_ms": [round(x, 4) for r in rounds for x in r],
                      "ceiling_fraction": frac(n, flops["latency"], p50["median"] / 1000.0)}
        out["latency"] = {"description": f"{cfg.latency_calls} single-query calls per round, one after another "
                          f"({texts.describe()['queries']['mean_tokens']} tokens on average); "
                          f"{LATENCY_WARM_CALLS} warm-up calls dropped", "calls": cfg.latency_calls,
                          "flops_per_call": flops["latency"], "results": res}
    for wl, items in (("batch32x128", texts.batch_tokens), ("corpus", texts.corpus_tokens)):
        if wl not in rec:
            continue
        res = {}
        for n, secs in rec[wl].items():
            s, per_round = summarize(secs), [len(items) / x for x in secs]
            res[n] = {"seconds": s, "items_per_s": summarize(per_round), "rounds": per_round,
                      "tokens_per_s": summarize([sum(items) / x for x in secs]),
                      "ceiling_fraction": frac(n, flops[wl], s["median"])}
        d = texts.describe()["batch" if wl == "batch32x128" else "corpus"]
        out[wl] = {"description": f"one call with {d['n']} passages of {d['min_tokens']}-{d['max_tokens']} tokens "
                   f"(mean {d['mean_tokens']}), the system's own batching", "items": len(items), "tokens": sum(items),
                   "flops": flops[wl], "results": res}
    if "concurrent" in rec:
        res = {}
        for n, by_mode in rec["concurrent"].items():
            res[n] = {mode: {c: {"rps": summarize([r.rps for r in rs]),
                                 "p50_ms": summarize([float(np.percentile(r.latencies_ms, 50)) for r in rs]),
                                 "p99_ms": summarize([float(np.percentile(r.latencies_ms, 99)) for r in rs]),
                                 "mean_batch_size": float(np.median([r.mean_batch_size for r in rs])) if rs[0].mean_batch_size else None}
                             for c, rs in by_c.items()} for mode, by_c in by_mode.items()}
        out["concurrent"] = {"description": f"closed-loop clients sending single queries for {cfg.concurrent_s} s per "
                             "point: 'batched' through DynamicBatcher (max 64 rows, max_wait 0 ms, the batcher's default; callers tokenize), "
                             "'direct' = one encode_queries call per request from each client thread",
                             "clients": list(CLIENTS), "duration_s": cfg.concurrent_s, "results": res}
    return out


# --- the run --------------------------------------------------------------------------------
def run(cfg: BenchConfig, log: Log = _stderr) -> dict[str, Any]:
    from tqdm import tqdm

    from bowrt.runtime.host import physical_cores

    t_start = time.time()
    plain_log = log

    def log(msg: str) -> None:  # every line with the time since start, so slow phases show
        plain_log(f"[{time.time() - t_start:6.1f}s] {msg}")

    share = machine.CpuShare()
    _quiet_libraries()
    for w in cfg.workloads:
        if w not in WORKLOADS:
            raise OptionError(f"unknown workload {w!r}; valid: {', '.join(WORKLOADS)}")
    systems.expand_against(list(cfg.against))  # unknown names fail now, before any export
    threads = cfg.threads or physical_cores()
    notes: list[str] = []
    model_dir, bundles = resolve_model(cfg, log, notes)
    specs = make_specs(cfg, model_dir, bundles, threads)
    first = next(iter(bundles.values()))
    config = models.read_config(model_dir) if model_dir else None
    if config is None:
        from bowrt.bundle import verify_bundle

        m = verify_bundle(first)
        config = {"hidden_size": m.hidden_size, "num_hidden_layers": m.num_layers, "intermediate_size": 4 * m.hidden_size}
        notes.append("no model folder: FLOPs assume intermediate_size = 4 x hidden")
    log(f"machine and GEMM ceilings ({threads} threads) ...")
    desc, vers = machine.describe(), machine.versions()
    ceilings = machine.gemm_ceilings(config, threads, tokens=1024 if cfg.quick else 2048, min_s=0.3 if cfg.quick else 1.0)
    log(f"  best fp32 {ceilings['best']['fp32']} GFLOP/s, bf16 {ceilings['best']['bf16']}, int8 {ceilings['best']['int8']} GOP/s")
    texts = workloads.make_texts(first / "tokenizer.json", queries=max(cfg.latency_calls, 256), corpus=cfg.corpus_size, seed=cfg.seed)

    info: dict[str, dict[str, Any]] = {}
    names = list(specs)
    for n in names:
        if not n.startswith("bowrt-") and specs[n].model_dir is None:
            info[n] = {"status": "unavailable", "reason": "needs --model DIR: a local copy of the bundle's source model (no hub here)"}
    for n in names:
        if n not in info and (why := systems.unavailable_reason(n)):
            info[n] = {"status": "unavailable", "reason": why}
            log(f"{n}: not available: {why}")
    names = [n for n in names if n not in info]
    rate = _rates(specs, ceilings)
    if cfg.quick:
        kept, cfg, texts = fit_quick(cfg, names, texts, config, rate, log, notes)
        info.update({n: {"status": "skipped", "reason": "left out by --quick (time budget)"} for n in names if n not in kept})
        names = kept
    flops = workload_flops(config, texts, cfg)
    log(f"rough estimate before loading: {estimate_s(cfg, names, flops, rate) / 60:.1f} min for {len(names)} systems")

    loaded: dict[str, Any] = {}
    work = models.cache_dir() / "peers"
    for n in names:
        log(f"loading {n} ...")
        try:
            specs[n] = systems.prepare(specs[n], work)
            loaded[n] = systems.load(specs[n])
        except systems.Unavailable as e:
            info[n] = {"status": "unavailable", "reason": str(e)}
            log(f"  not available: {e}")
            continue
        s = loaded[n]
        info[n] = {"status": "ok", "precision": specs[n].precision, "batching": s.batching,
                   "sorts_by_length": s.sorts_by_length, "model_bytes": s.model_bytes,
                   "runs_in": getattr(s, "where", "this process")}
    if not loaded:
        raise RuntimeError("no system could run: " + "; ".join(f"{n}: {i['reason']}" for n, i in info.items()))

    log("warm-up round (not counted) ...")
    warm: dict[str, Any] = {}
    for n, s in list(loaded.items()):
        try:
            for wl in cfg.workloads:
                run_workload(n, s, wl, texts, cfg, warm, warm=True)
        except Exception as e:  # a peer that breaks on these inputs is reported, not fatal
            _drop(n, loaded, info, f"failed in the warm-up: {type(e).__name__}: {e}", log)
        time.sleep(PAUSE_S)
    measured_rate = {}  # FLOP/s each system reached in the warm-up, for the estimate
    for n in loaded:
        if n in warm.get("corpus", {}):
            measured_rate[n] = machine.encoder_flops(config, texts.corpus_tokens[:WARM_CORPUS]) / warm["corpus"][n][0]
        elif n in warm.get("batch32x128", {}):
            measured_rate[n] = flops["batch32x128"] / 8 / warm["batch32x128"][n][0]  # 4 of the 32 rows
    lat_s = {n: float(np.median(v[0])) / 1000 for n, v in warm.get("latency", {}).items()}
    est = estimate_s(cfg, list(loaded), flops, {**rate, **measured_rate}, lat_s)
    log(f"estimated duration: {est / 60:.1f} min ({cfg.n_rounds} round(s) x {len(loaded)} systems; "
        f"latency {cfg.latency_calls} calls, corpus {cfg.corpus_size} passages)")

    rec: dict[str, Any] = {}
    order = list(loaded)
    steps = cfg.n_rounds * sum(1 for n in order for wl in cfg.workloads if wl != "concurrent" or n.startswith("bowrt-"))
    with tqdm(total=steps, unit="run", desc="benchmark", file=sys.stderr, dynamic_ncols=True, mininterval=2.0) as bar:
        for r in range(cfg.n_rounds):
            k = r % len(order)
            for n in order[k:] + order[:k]:
                for wl in cfg.workloads:
                    if n not in loaded or (wl == "concurrent" and not n.startswith("bowrt-")):
                        continue
                    bar.set_postfix_str(f"round {r + 1}/{cfg.n_rounds} {n} {wl}")
                    try:
                        run_workload(n, loaded[n], wl, texts, cfg, rec)
                    except Exception as e:
                        _drop(n, loaded, info, f"failed in round {r + 1} ({wl}): {type(e).__name__}: {e}", bar.write)
                        for per_wl in rec.values():
                            per_wl.pop(n, None)
                    bar.update(1)
                time.sleep(PAUSE_S)

    results_wl = _gather(rec, texts, flops, specs, ceilings, cfg)
    if cfg.memory:
        log("cold start and peak memory, one fresh process per system ...")
        mem_names = [n for n in loaded if not cfg.quick or n.startswith("bowrt-") or n == "torch"]
        if len(mem_names) < len(loaded):
            notes.append("--quick: cold start and peak RSS measured for torch and bowrt only")
        # The corpus's first 256 passages hold its longest batches for every system (fastembed's batch is 256).
        payload = {} if cfg.quick else {"batch32x128": texts.batch, "corpus[:256]": texts.corpus[:256]}
        for n, m in coldstart.measure({n: specs[n] for n in mem_names}, payload, log).items():
            info[n]["memory"] = m
    acc = None
    if cfg.accuracy:
        log("accuracy against PyTorch fp32 on MiniLM (real weights) ...")
        acc = _accuracy([n for n in specs if info.get(n, {}).get("status") in ("ok", "unavailable")], threads, work, log,
                        cfg.quick)
    notes += [
        "all systems run in one process, loaded from the same local folder (HF_HUB_OFFLINE=1); "
        f"a {PAUSE_S} s pause between systems lets spinning ORT/OpenMP worker threads go idle",
        "% ceiling counts useful FLOPs only (no padding), 2 x linear weights x tokens + attention 4 L^2 H per layer",
        "fastembed runs a plain feature-extraction ONNX export (last_hidden_state, no fusions) of the same folder, "
        "as optimum-cli would produce; fastembed cannot download here",
        *([(f"ort-qint8 is a reconstruction, not sentence-transformers: it stands in for st-onnx-int8 (sentence-transformers' int8 model with the "
            f"{specs['ort-qint8'].files.get('config', st_int8.host_config())} config, the one for this host's "
            "ISA; it needs optimum): the same export and the same ONNXQuantizer settings, run with "
            "SentenceTransformer.encode's batching (benchmarks/st_int8.py)")] if "ort-qint8" in specs else []),
        "peak RSS: a fresh process per system: load, one query" + (" (--quick)" if cfg.quick else
                                                                   ", the 32x128 batch, the corpus's first 256 passages"),
    ]
    mdesc = {"folder": str(model_dir) if model_dir else None, "hidden": config["hidden_size"],
             "layers": config["num_hidden_layers"], "intermediate": config.get("intermediate_size"),
             "pooling": specs[next(iter(bundles))].pooling, "normalize": specs[next(iter(bundles))].normalize,
             "bundles": {n: str(p) for n, p in bundles.items()}}
    others = share.others_fraction()
    if others is not None and others > 0.05:
        notes.insert(0, f"WARNING: other processes used {100 * others:.0f}% of the CPUs during this run "
                        f"(load average {share.load_at_start:.1f} at the start): every figure is slowed and noisier")
        log(notes[0])
    info = {n: info[n] for n in specs if n in info}  # the report lists systems in command-line order
    res = {
        "schema": "bowrt-bench/1",
        "meta": {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": cfg.quick, "rounds": cfg.n_rounds,
                 "threads": threads, "device": cfg.device, "workloads": list(cfg.workloads), "model": mdesc,
                 "texts": texts.describe(), "seed": cfg.seed, "estimated_s": est, "notes": notes,
                 "other_processes_cpu_fraction": others, "load_average_at_start": share.load_at_start},
        "machine": desc, "versions": vers, "ceilings": ceilings, "systems": info, "workloads": results_wl,
        "overhead": {n: workloads.overhead(log) for n, log in rec.get("timings", {}).items() if log}, "accuracy": acc,
        "ipc": ipc_summary(rec.get("ipc", {})), "peer_env": _peer_env_info(),
    }
    for s in loaded.values():  # peer workers exit now, not at interpreter exit
        if hasattr(s, "close"):
            s.close()
    res["meta"]["duration_s"] = time.time() - t_start
    paths = write_report(res, cfg.out)
    log(f"wrote {', '.join(str(p) for p in paths.values())} in {res['meta']['duration_s']:.0f} s")
    return res


def _peer_env_info() -> dict[str, Any] | None:
    """What the peer environment holds (pip freeze), when it is built."""
    from benchmarks import peer_env

    info = peer_env.ready_info()
    return {"venv": str(peer_env.env_dir()), **info} if info else None


def _drop(name: str, loaded: dict[str, Any], info: dict[str, Any], reason: str, log: Log) -> None:
    loaded.pop(name, None)
    info[name] = {**info.get(name, {}), "status": "unavailable", "reason": reason}
    log(f"  {name}: {reason}")


def _accuracy(names: list[str], threads: int, work: Path, log: Log, quick: bool) -> dict[str, Any] | None:
    from benchmarks.accuracy import run_accuracy

    try:
        return run_accuracy(names, threads, work, log, quick)
    except Exception as e:  # accuracy is a section of the report; its failure must not lose the speed figures
        log(f"  accuracy failed: {type(e).__name__}: {e}")
        return {"description": f"failed: {type(e).__name__}: {e}", "results": {}}
