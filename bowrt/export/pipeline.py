"""export_model: source model -> verified bundles, one folder per variant.

Steps: load (source.py) -> torch.onnx (to_onnx.py) -> fuse (optimize.py) ->
variant graphs (fp16.py, int8.py) -> parity against PyTorch on the probe set
(parity.py) -> gates -> atomic bundle write (bundle.py).
"""

from __future__ import annotations

import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bowrt import __version__
from bowrt.bundle import (
    CPU_REWRITE_CONTRACT,
    DEFAULT_MODEL,
    INT8_ISAS,
    MODEL_FILE,
    NUMERICS_FILE,
    TOKENIZER_FILE,
    U8_MODEL_FILE,
    VARIANTS,
    Manifest,
    TensorSpec,
    TextRules,
    write_bundle,
)
from bowrt.errors import BundleError, ExportError, OptionError, ParityGateError
from bowrt.export import fp16, int8, int8_isa, optimize, parity, probes, source, to_onnx
from bowrt.runtime import host

Log = Callable[[str], None]


# Recorded in the CPU variants' manifests (see optimize.split_skip_layer_norms).
CPU_LAYER_NORM_REWRITE = (
    "SkipLayerNormalization split into Add + LayerNormalization (faster on ORT's CPU kernels; "
    "ORT re-fuses it on CUDA at session load)"
)
# Recorded where optimize.cls_tail applied (CLS pooling).
CLS_TAIL_REWRITE = (
    "CLS pooling: after the last attention, the output projection, FFN and layer norms run on "
    "the CLS row only (the other rows never reach the output)"
)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"bowrt": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def parse_variants(variants: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = [v.strip() for v in variants.split(",")] if isinstance(variants, str) else list(variants)
    items = [v for v in items if v]
    unknown = [v for v in items if v not in VARIANTS]
    if unknown or not items:
        raise OptionError(f"unknown variant(s) {unknown or items}; valid: {', '.join(VARIANTS)}")
    return tuple(dict.fromkeys(items))


def _save_tokenizer(src: source.Source, path: Path) -> Any:
    tok = src.tokenizer.backend_tokenizer
    tok = tok.__class__.from_str(tok.to_str())
    # The runtime configures truncation per kind (query/passage) at load and pads per batch.
    tok.no_padding()
    tok.no_truncation()
    tok.save(str(path))
    return tok


class _Probe:
    """Probe ids and the PyTorch reference vectors, computed once for all variants."""

    def __init__(self, src: source.Source, tokenizer: Any, rules: TextRules) -> None:
        self.texts = probes.load_text_set("probes")
        self.q_ids, self.p_ids = probes.tokenized(tokenizer, self.texts, rules)
        ref = probes.torch_runner(src.model, src.pooling)
        self.ref_q = probes.encode_ids(ref, self.q_ids)
        self.ref_p = probes.encode_ids(ref, self.p_ids)

    def measure(self, model_path: Path) -> dict[str, Any]:
        run = probes.ort_runner(str(model_path))
        q = probes.encode_ids(run, self.q_ids)
        p = probes.encode_ids(run, self.p_ids)
        metrics: dict[str, Any] = parity.compare(self.ref_q, self.ref_p, q, p)
        # Batch invariance: every probe text alone vs inside its padded batch of 16.
        alone = np.concatenate([probes.encode_ids(run, [ids]) for ids in self.q_ids + self.p_ids])
        metrics["batch_invariance_min_cosine"] = float(parity.cosines(alone, np.concatenate([q, p])).min())
        return metrics

    def numerics(self, model_path: Path, variant: str, gate: dict[str, float], dst: Path) -> dict[str, Any]:
        """The self-check a host runs on the bundle (``bowrt verify --numerics``): a few
        probe texts, their PyTorch fp32 vectors and this graph's own vectors on this
        host, written to ``dst``; returns the manifest's description of them."""
        qi, pi = numerics_texts(self.q_ids, self.p_ids)
        run = probes.ort_runner(str(model_path))
        bundle = np.concatenate([probes.encode_ids(run, [self.q_ids[i] for i in qi]),
                                 probes.encode_ids(run, [self.p_ids[i] for i in pi])])
        pytorch = np.concatenate([self.ref_q[qi], self.ref_p[pi]])
        np.savez(dst, pytorch=pytorch.astype(np.float32), bundle=bundle.astype(np.float32))
        return {
            "file": NUMERICS_FILE,
            "queries": [self.texts.queries[i] for i in qi],
            "passages": [list(self.texts.passages[i]) for i in pi],
            # Against PyTorch: the variant's gate. Against this graph's vectors on the
            # export host: the same vectors to float rounding (every ISA computes the same
            # integers; float kernels differ in the last bits).
            "min_cosine": gate.get("min_cosine", 0.0),
            "host_min_cosine": HOST_AGREEMENT[variant],
        }


# The self-check: how many probe texts, and how close a host must come to the export
# host's vectors, per variant. Float kernels differ by ISA in the last bits; int8 also
# re-rounds a per-token activation wherever such a difference crosses a rounding step.
# Measured on MiniLM's self-check texts, an emulated AVX2 CPU against the AMX export host:
# the int8 twin (the same integers) 1 - cos = 9.5e-5; the u8 x s8 graph, whose pairs
# saturate there, 3.6e-3. 1e-3 lies 10x above the one and 3.6x below the other.
NUMERICS_QUERIES = 4
NUMERICS_PASSAGES = 4
HOST_AGREEMENT = {"fp32": 0.99999, "fp16": 0.9999, "int8": 0.999}


def numerics_texts(q_ids: list[list[int]], p_ids: list[list[int]]) -> tuple[list[int], list[int]]:
    """Which probes the self-check carries: the first queries, and passages spread over
    the shorter half of the lengths (45-130 tokens: the check runs at every load, and
    its cost is what it adds to a load; picked from the middle of the length range it
    took 330 ms on the twin's int8 bundle, 42 % of a load)."""
    by_len = sorted(range(len(p_ids)), key=lambda i: (len(p_ids[i]), i))
    n = NUMERICS_PASSAGES
    picks = [by_len[(j + 1) * len(by_len) // (2 * n + 2)] for j in range(n)]
    return list(range(min(NUMERICS_QUERIES, len(q_ids)))), sorted(dict.fromkeys(picks))


def _default_opset(path: Path) -> int:
    """The graph's ONNX opset (int8 graphs are raised to 21 for blocked QuantizeLinear)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _ref_vectors(src: source.Source, ids: list[list[int]]) -> np.ndarray:
    return probes.encode_ids(probes.torch_runner(src.model, src.pooling), ids)


def best_step(tried: list[dict[str, Any]], target: dict[str, float]) -> int:
    """Index of the search step to ship: the first that meets ``target``; if none does,
    the one meeting most of its metrics, then with the highest mean cosine, then min
    cosine (ties: the earliest, which keeps fewer nodes out of int8).

    Mean cosine, not overlap@10, breaks the tie: on the 96 calibration texts overlap@10
    moves by 0.006 between graphs whose cosines agree to 7 digits (float rounding flips
    near-tied ranks), so picking by it picks noise; the mean cosine moves with fidelity."""
    met = [sum(1 for k, v in target.items() if tried[i].get(k, -math.inf) >= v) for i in range(len(tried))]
    if len(target) in met:
        return met.index(len(target))
    return max(range(len(tried)), key=lambda i: (met[i], tried[i]["mean_cosine"], tried[i]["min_cosine"], -i))


def _int8(
    fused: Path, work: Path, src: source.Source, tokenizer: Any, rules: TextRules,
    gates: dict[str, float], method: str, log: Log, *, static_tolerance: float = int8.STATIC_TOLERANCE,
) -> tuple[Path, dict[str, Any]]:
    """Build the int8 graph. For smoothquant, each node starts in the activation mode the
    simulation picks (static where nearly as accurate as per-token: the fastest form). If
    the calibration texts (never the probes) then miss the search target, measure each
    node's end-to-end effect (the output error left when that node alone stays fp32) and,
    most effective first, move nodes one tier up (static -> per-token -> fp32), one at a
    time, until the target, the fp32 cap or the step cap is reached."""
    import onnx

    path = work / "model.int8.onnx"
    if method == "dynamic":
        info = int8.quantize_dynamic_int8(fused, path)
        optimize.split_skip_layer_norms(path, path)
        return path, info
    cal = probes.load_text_set("calibration")
    cal_q, cal_p = probes.tokenized(tokenizer, cal, rules)
    batches = [(ids, mask) for _, ids, mask in probes.padded_batches(cal_q + cal_p, 16)]
    model = onnx.load(str(fused))
    targets = int8.find_targets(model)
    log(f"  calibrating on {len(cal_q) + len(cal_p)} texts ...")
    stats = int8.activation_stats(fused, targets, batches)
    alphas, modes = int8.choose_plan(model, stats, tolerance=static_tolerance)
    ref_q, ref_p = _ref_vectors(src, cal_q), _ref_vectors(src, cal_p)
    # A gate set to 0 (e.g. ranking agreement on random weights) is not searched for either.
    target = {k: max(v, gates.get(k, 0.0)) for k, v in parity.INT8_SEARCH_TARGET.items() if gates.get(k, 1.0) > 0}
    max_fp32 = max(1, round(len(targets) * parity.INT8_MAX_FP32_FRACTION))
    cache: dict[Any, Any] = {}  # rounded weights, shared by every graph built below

    def build(keep: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
        info = int8.quantize_smooth(fused, path, stats, alpha=alphas, modes=modes, keep_fp32=frozenset(keep), cache=cache)
        optimize.split_skip_layer_norms(path, path)  # measure the graph that ships
        run = probes.ort_runner(str(exact_graph(path)))
        return info, parity.compare(ref_q, ref_p, probes.encode_ids(run, cal_q), probes.encode_ids(run, cal_p))

    def step(keep: list[str], got: dict[str, float], moved: tuple[str, str] | None = None) -> dict[str, Any]:
        static = sum(1 for t in targets if t.name not in keep and modes[t.name] == "static")
        log(f"  int8 with {static} static, {len(targets) - static - len(keep)} per-token, {len(keep)} fp32 node(s), "
            f"on the calibration texts: min cos {got['min_cosine']:.5f}, overlap@10 {got['overlap_at_10']:.3f}")
        row = {"fp32_nodes": len(keep), "static_nodes": static, "min_cosine": got["min_cosine"],
               "mean_cosine": got["mean_cosine"], "overlap_at_10": got["overlap_at_10"]}
        return {**row, "node": moved[0], "to": moved[1]} if moved else row

    log(f"  rounding the weights of {len(targets)} nodes (GPTQ) ...")
    keep: list[str] = []
    info, got = build(keep)
    tried = [step(keep, got)]
    sensitivity: list[dict[str, Any]] = []
    plans = [(list(keep), dict(modes))]  # what each step built, to rebuild the best one
    if not parity.check_gates(got, target).passed:
        log(f"  measuring each node's effect on the output ({len(targets)} graphs) ...")
        t0 = time.perf_counter()
        left = {}
        for i, t in enumerate(targets, 1):
            left[t.name] = 1.0 - build([t.name])[1]["mean_cosine"]
            if i % 8 == 0 or i == len(targets):
                log(f"    {i}/{len(targets)} nodes, {time.perf_counter() - t0:.0f} s")
        order = sorted(left, key=lambda n: left[n])  # least error left first
        sensitivity = [{"node": n, "error_left_if_fp32": left[n]} for n in order]
        for name in order[: 2 * max_fp32]:
            if modes[name] == "static":
                modes[name] = "token"
            elif len(keep) < max_fp32:
                keep.append(name)
            else:
                continue
            info, got = build(keep)
            tried.append(step(keep, got, (name, "fp32" if name in keep else "token")))
            plans.append((list(keep), dict(modes)))
            if parity.check_gates(got, target).passed:
                break
    chosen = best_step(tried, target)
    if chosen != len(tried) - 1:
        # Target missed: ship the most faithful step, not merely the last one.
        keep, chosen_modes = plans[chosen]
        modes.clear()
        modes.update(chosen_modes)
        log(f"  target missed; shipping search step {chosen} (the best on the calibration texts)")
        info, _ = build(keep)
    info["calibration"] = {
        **cal.describe(), "tokens": stats.tokens, "search_target": target, "max_fp32_nodes": max_fp32,
        "static_tolerance": static_tolerance if math.isfinite(static_tolerance) else "inf",  # strict JSON
        "search": tried,
        "chosen_step": chosen,  # index into search: the step that ships
        # 1 - mean cosine to PyTorch on the calibration texts with only that node in fp32
        # (every other quantized), lowest first; empty when no search was needed.
        "sensitivity": sensitivity,
        "error_all_quantized": 1.0 - tried[0]["mean_cosine"],
    }
    return path, info


def exact_graph(path: Path) -> Path:
    """The graph that computes ``path``'s integers exactly on this host: ``path`` itself,
    or, where ONNX Runtime's int8 kernel adds products in saturating int16 pairs and the
    weights can overflow them, its u8 x u8 twin (written beside it; int8_isa.py). Every
    figure the export measures comes from the exact integers, so a bundle does not
    depend on the host that exported it."""
    if host.int8_kernel_exact():  # the common case: no need to read the graph
        return path
    import onnx

    model = onnx.load(str(path))
    if int8_isa.exact_isas(model)[1] == 0:
        return path
    twin = path.with_name(path.stem + ".u8.onnx")
    int8_isa.to_u8_weights(model)
    onnx.save(model, str(twin))
    return twin


def _int8_graphs(path: Path, work: Path, info: dict[str, Any], probe: _Probe) -> tuple[dict[str, Any], dict[str, Path]]:
    """The shipped int8 graph(s): the u8 x s8 graph, plus its u8 x u8 twin when some
    weight pairs could saturate a non-VNNI kernel; the manifest says which ISAs each is
    exact on, and the runtime picks at load. On an int32 host the twin's vectors are
    checked against the graph's (the same integers: they must agree to float rounding)."""
    import onnx

    model = onnx.load(str(path))
    isas, overflows = int8_isa.exact_isas(model)
    files = {MODEL_FILE: path}
    graphs = {MODEL_FILE: isas}
    twin_diff = None
    if overflows:
        twin = work / U8_MODEL_FILE
        int8_isa.to_u8_weights(model)
        onnx.save(model, str(twin))
        files[U8_MODEL_FILE] = twin
        graphs[U8_MODEL_FILE] = int8_isa.exact_isas(model)[0]
        if host.int8_kernel_exact():
            a = probes.encode_ids(probes.ort_runner(str(path)), probe.p_ids)
            b = probes.encode_ids(probes.ort_runner(str(twin)), probe.p_ids)
            twin_diff = float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-30))
            if twin_diff > TWIN_TOLERANCE:
                raise ExportError(f"the u8 x u8 twin of the int8 graph differs from it by {twin_diff:.2e} of the "
                                  f"largest output (> {TWIN_TOLERANCE}): it should compute the same integers")
    exact = sorted({i for v in graphs.values() for i in v}, key=list(INT8_ISAS).index)
    return {**info, "exact_isas": exact, "graphs": graphs, "pair_overflows": overflows,
            "twin_max_abs_diff_rel": twin_diff}, files


# The twin computes the same int32 sums; only float kernels (ORT may order a reduction
# differently per weight type) can move its output, by a few ulps.
TWIN_TOLERANCE = 1e-5


def export_model(
    model: str = DEFAULT_MODEL,
    out: str | Path = "bundles",
    variants: str | tuple[str, ...] = VARIANTS,
    *,
    force: bool = False,
    revision: str | None = None,
    pooling: str | None = None,
    query_max_length: int | None = None,
    passage_max_length: int | None = None,
    gates: list[str] | dict[str, dict[str, float]] | None = None,
    int8_method: str = "smoothquant",
    int8_static_tolerance: float = int8.STATIC_TOLERANCE,
    log: Log = _stderr,
) -> dict[str, Manifest]:
    """Export ``model`` into ``out/<variant>/`` bundles; returns their manifests.

    ``int8_static_tolerance``: a smoothquant node gets one calibrated activation scale
    (faster) instead of per-token scales when its simulated error is at most this many
    times the per-token one; 1.0 (default) only where that costs no accuracy.

    Every variant is checked against PyTorch on the built-in probe set; one
    that fails its gate raises :class:`ParityGateError` and writes nothing.
    """
    variants = parse_variants(variants)
    if int8_method not in int8.METHODS:
        raise OptionError(f"unknown int8 method {int8_method!r}; valid: {', '.join(int8.METHODS)}")
    if not (isinstance(int8_static_tolerance, (int, float)) and int8_static_tolerance >= 0):
        raise OptionError(f"int8 static tolerance must be a number >= 0, got {int8_static_tolerance!r}")
    gate_table = gates if isinstance(gates, dict) else parity.parse_gates(gates)
    out = Path(out)
    if out.exists() and not force:
        raise BundleError(f"{str(out)!r} already exists; pass --force (force=True) to replace it")

    t0 = time.perf_counter()
    log(f"loading {model} ...")
    src = source.load_source(
        model, revision=revision, pooling=pooling, query_max_length=query_max_length, passage_max_length=passage_max_length
    )
    rules = TextRules(query_max_length=src.query_max_length, passage_max_length=src.passage_max_length)
    log(
        f"  {src.config.model_type}: {src.num_layers} layers, hidden {src.hidden_size}, {src.num_heads} heads; "
        f"pooling {src.pooling}; max length query {rules.query_max_length} / passage {rules.passage_max_length}"
    )
    manifests: dict[str, Manifest] = {}
    with tempfile.TemporaryDirectory(prefix="bowrt-export-") as tmp:
        work = Path(tmp)
        tokenizer = _save_tokenizer(src, work / TOKENIZER_FILE)
        log("exporting to ONNX and fusing ...")
        raw = to_onnx.export_onnx(src.model, src.pooling, work / "raw.onnx")
        fused = work / "model.fp32.onnx"
        counts = optimize.fuse(raw, fused, num_heads=src.num_heads, hidden_size=src.hidden_size)
        problems = optimize.check_fusions(counts, src.num_layers)
        if problems:
            raise ExportError("graph fusion fell short (the graph would run slowly): " + "; ".join(problems))
        log("  fused operators: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        log("computing PyTorch reference vectors on the probe set ...")
        probe = _Probe(src, tokenizer, rules)

        built: dict[str, tuple[Path, dict[str, Any] | None, dict[str, Any]]] = {}
        rewrites: dict[str, list[str]] = {}
        checks: dict[str, dict[str, Any]] = {}
        for variant in variants:
            log(f"building {variant} ...")
            if variant == "fp32":
                path, info = work / "model.fp32.cpu.onnx", None
                optimize.split_skip_layer_norms(fused, path)
            elif variant == "fp16":
                path = work / "model.fp16.onnx"
                info = fp16.to_fp16(fused, path)
            else:
                path, info = _int8(fused, work, src, tokenizer, rules, gate_table[variant], int8_method, log,
                                     static_tolerance=float(int8_static_tolerance))
            rewrites[variant] = [] if variant == "fp16" else [CPU_LAYER_NORM_REWRITE]
            if src.pooling == "cls" and optimize.cls_tail(path, path):
                rewrites[variant].append(CLS_TAIL_REWRITE)
            files = {MODEL_FILE: path}
            if variant == "int8":
                info, files = _int8_graphs(path, work, info, probe)
            # Measure the integers the bundle stands for: on a host whose kernel saturates, its twin.
            measured = path if host.int8_kernel_exact() else files.get(U8_MODEL_FILE, path)
            built[variant] = (files, info, probe.measure(measured))
            metrics = built[variant][2]
            checks[variant] = probe.numerics(measured, variant, gate_table[variant], work / f"{variant}.{NUMERICS_FILE}")
            log("  " + parity.format_report(variant, metrics, gate_table[variant]))
            verdict = parity.check_gates(metrics, gate_table[variant])
            if not verdict.passed:
                raise ParityGateError(
                    f"{variant} failed its parity gate against PyTorch: {'; '.join(verdict.failures)}. "
                    f"Nothing was written. To accept it anyway, relax the gate, e.g. --gate {variant}.METRIC=VALUE"
                )

        versions = tool_versions()
        export_host = host.describe()
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for variant, (files, info, metrics) in built.items():
            manifest = Manifest(
                variant=variant,
                source_model=src.name,
                source_revision=src.revision,
                hidden_size=src.hidden_size,
                num_layers=src.num_layers,
                num_heads=src.num_heads,
                pooling=src.pooling,
                normalize=src.normalize,
                opset=_default_opset(files[MODEL_FILE]),
                inputs=tuple(TensorSpec(n, "int64", ("batch", "sequence")) for n in to_onnx.INPUT_NAMES),
                outputs=(TensorSpec(to_onnx.OUTPUT_NAME, "float32", ("batch", src.hidden_size)),),
                text=rules,
                quantization=info,
                parity={
                    "reference": "PyTorch fp32 eager, same token ids",
                    "probe_set": probe.texts.describe(),
                    "metrics": metrics,
                    "gates": gate_table[variant],
                    "fused_operators": counts,
                    "graph_rewrites": rewrites[variant],
                    # The host the figures above were measured on.
                    "host": export_host,
                    "numerics": checks[variant],
                },
                tools=versions,
                # The ORT optimizers that must stay off on CPU: those that would undo this graph's rewrites.
                runtime=dict(CPU_REWRITE_CONTRACT) if CPU_LAYER_NORM_REWRITE in rewrites[variant]
                else {"cpu_disabled_optimizers": []},
                created=created,
            )
            manifests[variant] = write_bundle(
                out / variant, manifest,
                {**files, TOKENIZER_FILE: work / TOKENIZER_FILE, NUMERICS_FILE: work / f"{variant}.{NUMERICS_FILE}"},
                force=force,
            )
            log(f"wrote {out / variant}")
    log(f"done in {time.perf_counter() - t0:.1f} s")
    return manifests
