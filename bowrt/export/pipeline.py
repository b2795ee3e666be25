"""export_model: source model -> verified bundles, one folder per variant.

Steps: load (source.py) -> torch.onnx (to_onnx.py) -> fuse (optimize.py) ->
variant graphs (``VARIANT_STEPS``: optimize.py, fp16.py, int8/) -> parity against
PyTorch on the probe set (parity.py) -> gates -> atomic bundle write (bundle.py).
"""

from __future__ import annotations

import io
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from bowrt.errors import ExportError, ExportOptionError, ExportOutputExistsError, ParityGateError
from bowrt.export import eval_gate, external, fp16, int8, optimize, parity, probes, source, to_onnx
from bowrt.export.int8 import embeddings, isa
from bowrt.export.parity import Probe
from bowrt.runtime import host, twin

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
        raise ExportOptionError(f"unknown variant(s) {unknown or items}; valid: {', '.join(VARIANTS)}")
    return tuple(dict.fromkeys(items))


def _save_tokenizer(src: source.Source, path: Path) -> Any:
    tok = src.tokenizer.backend_tokenizer
    tok = tok.__class__.from_str(tok.to_str())
    # The runtime configures truncation per kind (query/passage) at load and pads per batch.
    tok.no_padding()
    tok.no_truncation()
    tok.save(str(path))
    return tok


def _default_opset(path: Path) -> int:
    """The graph's ONNX opset (int8 graphs are raised to 21 for blocked QuantizeLinear)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _ref_vectors(src: source.Source, ids: list[list[int]]) -> np.ndarray:
    return probes.encode_ids(probes.torch_runner(src.model, src.pooling), ids)


@dataclass(frozen=True, kw_only=True)
class _Job:
    """What every variant's builder reads: the loaded source, the fused fp32 graph, the
    gates and the int8 settings."""

    src: source.Source
    tokenizer: Any
    rules: TextRules
    work: Path
    fused: Path
    gates: dict[str, dict[str, float]]
    int8_settings: int8.Int8Settings
    log: Log


def _fp32(job: _Job) -> tuple[Path, dict[str, Any] | None]:
    path = job.work / "model.fp32.cpu.onnx"
    optimize.split_skip_layer_norms(job.fused, path)
    return path, None


def _fp16(job: _Job) -> tuple[Path, dict[str, Any] | None]:
    path = job.work / "model.fp16.onnx"
    return path, fp16.to_fp16(job.fused, path)


def _int8(job: _Job) -> tuple[Path, dict[str, Any] | None]:
    """The int8 graph: ONNX Runtime's dynamic quantization, or smoothquant searched on the
    calibration texts (never the probes; int8/search.py)."""
    path = job.work / "model.int8.onnx"
    if job.int8_settings.method == "dynamic":
        info = int8.quantize_dynamic_int8(job.fused, path)
        optimize.split_skip_layer_norms(path, path)
        tables = embeddings.quantize_embeddings(path, path) if job.int8_settings.embeddings == "int8" else None
    else:
        # The search starts from the graph with int8 embeddings: its calibration, GPTQ and
        # node search see every rounding the bundle ships.
        start = job.work / "model.fp32.int8-embeddings.onnx"
        tables = embeddings.quantize_embeddings(job.fused, start) if job.int8_settings.embeddings == "int8" else None
        texts = probes.load_text_set("calibration")
        q_ids, p_ids = probes.tokenized(job.tokenizer, texts, job.rules)
        cal = int8.CalibrationSet(texts=texts, q_ids=q_ids, p_ids=p_ids,
                                  ref_q=_ref_vectors(job.src, q_ids), ref_p=_ref_vectors(job.src, p_ids))
        info = int8.search_int8(start if tables else job.fused, path, calibration=cal, gates=job.gates["int8"],
                                settings=job.int8_settings, log=job.log)
    if job.int8_settings.embeddings == "int8":
        job.log("  word embeddings: " + ("int8, one scale per row" if tables else
                                         "kept fp32 (the graph has no embedding op this export can replace)"))
    return path, {**(info or {}), "embeddings": tables or {"word_embeddings": "fp32"}}


def _int8_graphs(path: Path, work: Path, info: dict[str, Any], probe: Probe) -> tuple[dict[str, Any], dict[str, Path], Path]:
    """The int8 graph and, when some weight pairs could saturate a non-VNNI kernel, its
    u8 x u8 twin: not shipped, but named in the manifest (``derived``, with the sha256 of
    its bytes) for the runtime to derive at load (runtime/twin.py). The manifest says which
    ISAs each is exact on. On an int32 host the twin's vectors are checked against the
    graph's (the same integers: they must agree to float rounding). Returns the quantization
    record, the files to ship, and the graph whose figures the bundle reports (the twin
    where this host's kernel saturates)."""
    import onnx

    isas, overflows = isa.exact_isas(onnx.load(str(path)))
    graphs, derived = {MODEL_FILE: isas}, {}
    measured, twin_diff = path, None
    if overflows:
        # Derived as the runtime derives it: from the graph file and its data file, streamed.
        buf = io.BytesIO()
        sha, size = twin.write_u8(path, buf)
        data = buf.getvalue()
        twin_isas, left = isa.exact_isas(onnx.load_from_string(data))
        if left:
            raise ExportError(f"the u8 x u8 twin still has {left} weight pairs that can saturate: it should have none")
        twin_path = work / U8_MODEL_FILE
        twin_path.write_bytes(data)
        graphs[U8_MODEL_FILE] = twin_isas
        derived[U8_MODEL_FILE] = {"from": MODEL_FILE, "transform": twin.transform_of(path.read_bytes()),
                                  "sha256": sha, "bytes": size}
        if host.int8_kernel_exact():
            a = probes.encode_ids(probes.ort_runner(str(path)), probe.p_ids)
            b = probes.encode_ids(probes.ort_runner(str(twin_path)), probe.p_ids)
            twin_diff = float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-30))
            if twin_diff > TWIN_TOLERANCE:
                raise ExportError(f"the u8 x u8 twin of the int8 graph differs from it by {twin_diff:.2e} of the "
                                  f"largest output (> {TWIN_TOLERANCE}): it should compute the same integers")
        else:
            measured = twin_path
    exact = sorted({i for v in graphs.values() for i in v}, key=list(INT8_ISAS).index)
    return {**info, "exact_isas": exact, "graphs": graphs, "derived": derived, "pair_overflows": overflows,
            "twin_max_abs_diff_rel": twin_diff}, external.graph_files(path), measured


# The twin computes the same int32 sums; only float kernels (ORT may order a reduction
# differently per weight type) can move its output, by a few ulps.
TWIN_TOLERANCE = 1e-5


@dataclass(frozen=True)
class _Variant:
    """How one variant is built: its graph builder, the rewrites that builder applies (for
    the manifest), where a variant ships more than one graph, what writes them, and whether
    its weights go to a data file beside the graph (:mod:`bowrt.export.external`)."""

    build: Callable[[_Job], tuple[Path, dict[str, Any] | None]]
    rewrites: tuple[str, ...]
    graphs: Callable[[Path, Path, dict[str, Any], Probe], tuple[dict[str, Any], dict[str, Path], Path]] | None = None
    external: bool = False


# int8 (the edge hosts' bundle) keeps its weights in model.onnx.data, which ONNX Runtime maps.
VARIANT_STEPS: dict[str, _Variant] = {
    "fp32": _Variant(_fp32, (CPU_LAYER_NORM_REWRITE,)),
    "fp16": _Variant(_fp16, ()),
    "int8": _Variant(_int8, (CPU_LAYER_NORM_REWRITE,), _int8_graphs, external=True),
}


@dataclass(frozen=True)
class _Built:
    """A variant that passed its gate: its graph files and what its manifest says of them."""

    files: dict[str, Path]
    quantization: dict[str, Any] | None
    metrics: dict[str, Any]
    numerics: dict[str, Any]
    rewrites: list[str]


def _build_variant(variant: str, job: _Job, probe: Probe) -> _Built:
    """Build ``variant``'s graph(s) and measure them on the probes; raises
    :class:`ParityGateError` when they miss the variant's gate."""
    job.log(f"building {variant} ...")
    step = VARIANT_STEPS[variant]
    path, info = step.build(job)
    rewrites = list(step.rewrites)
    if job.src.pooling == "cls" and optimize.cls_tail(path, path):
        rewrites.append(CLS_TAIL_REWRITE)
    if step.external:  # everything below measures the files the bundle ships
        path = external.store_external(path, job.work / f"{variant}.bundle-graph")
    files, measured = external.graph_files(path), path
    if step.graphs is not None:
        # Measure the integers the bundle stands for: on a host whose kernel saturates, its twin.
        info, files, measured = step.graphs(path, job.work, info, probe)
    gate = job.gates[variant]
    metrics = probe.measure(measured)
    checks = probe.numerics(measured, variant, gate, job.work / f"{variant}.{NUMERICS_FILE}")
    job.log("  " + parity.format_report(variant, metrics, gate))
    verdict = parity.check_gates(metrics, gate)
    if not verdict.passed:
        raise ParityGateError(
            f"{variant} failed its parity gate against PyTorch: {'; '.join(verdict.failures)}. "
            f"Nothing was written. To accept it anyway, relax the gate, e.g. --gate {variant}.METRIC=VALUE"
        )
    return _Built(files, info, metrics, checks, rewrites)


def _manifest(variant: str, built: _Built, job: _Job, *, probe_set: dict[str, Any], counts: dict[str, int],
              tools: dict[str, str], export_host: dict[str, Any], created: str) -> Manifest:
    src = job.src
    return Manifest(
        variant=variant,
        source_model=src.name,
        source_revision=src.revision,
        hidden_size=src.hidden_size,
        num_layers=src.num_layers,
        num_heads=src.num_heads,
        pooling=src.pooling,
        normalize=src.normalize,
        opset=_default_opset(built.files[MODEL_FILE]),
        inputs=tuple(TensorSpec(n, "int64", ("batch", "sequence")) for n in to_onnx.INPUT_NAMES),
        outputs=(TensorSpec(to_onnx.OUTPUT_NAME, "float32", ("batch", src.hidden_size)),),
        text=job.rules,
        quantization=built.quantization,
        parity={
            "reference": "PyTorch fp32 eager, same token ids",
            "probe_set": probe_set,
            "metrics": built.metrics,
            "gates": job.gates[variant],
            "fused_operators": counts,
            "graph_rewrites": built.rewrites,
            # The host the figures above were measured on.
            "host": export_host,
            "numerics": built.numerics,
        },
        tools=tools,
        # The ORT optimizers that must stay off on CPU: those that would undo this graph's rewrites.
        runtime=dict(CPU_REWRITE_CONTRACT) if CPU_LAYER_NORM_REWRITE in built.rewrites
        else {"cpu_disabled_optimizers": []},
        created=created,
    )


def _write_bundles(out: Path, built: dict[str, _Built], job: _Job, *, probe: Probe, counts: dict[str, int],
                   force: bool) -> dict[str, Manifest]:
    shared = {"tools": tool_versions(), "export_host": host.describe(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    manifests: dict[str, Manifest] = {}
    for variant, b in built.items():
        manifest = _manifest(variant, b, job, probe_set=probe.texts.describe(), counts=counts, **shared)
        manifests[variant] = write_bundle(
            out / variant, manifest,
            {**b.files, TOKENIZER_FILE: job.work / TOKENIZER_FILE, NUMERICS_FILE: job.work / f"{variant}.{NUMERICS_FILE}"},
            force=force,
        )
        job.log(f"wrote {out / variant}")
    return manifests


def _fused_graph(src: source.Source, work: Path, log: Log) -> tuple[Any, Path, dict[str, int]]:
    """The bundle's tokenizer, and the fused fp32 graph every variant starts from (with
    its operator counts); refuses a graph whose fusions fell short."""
    tokenizer = _save_tokenizer(src, work / TOKENIZER_FILE)
    log("exporting to ONNX and fusing ...")
    raw = to_onnx.export_onnx(src.model, src.pooling, work / "raw.onnx")
    fused = work / "model.fp32.onnx"
    counts = optimize.fuse(raw, fused, num_heads=src.num_heads, hidden_size=src.hidden_size)
    problems = optimize.check_fusions(counts, src.num_layers)
    if problems:
        raise ExportError("graph fusion fell short (the graph would run slowly): " + "; ".join(problems))
    log("  fused operators: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return tokenizer, fused, counts


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
    int8_profile: str = "default",
    int8_static_tolerance: float | None = None,
    int8_embeddings: str = "int8",
    eval_data: str | Path | None = None,
    eval_max_drop: float = eval_gate.DEFAULT_MAX_DROP,
    log: Log = _stderr,
) -> dict[str, Manifest]:
    """Export ``model`` into ``out/<variant>/`` bundles; returns their manifests.

    ``int8_method``, ``int8_profile``, ``int8_static_tolerance`` and ``int8_embeddings``: see
    :class:`bowrt.export.int8.Int8Settings` (static activation scales where they cost no
    accuracy, or everywhere the speed profile's target allows; the word embeddings as int8
    per row, :mod:`bowrt.export.int8.embeddings`).

    Every variant is checked against PyTorch on the built-in probe set; one that fails its gate raises
    :class:`ParityGateError` and writes nothing. ``eval_data`` and ``eval_max_drop``: the retrieval gate on
    a labelled set (:mod:`bowrt.export.eval_gate`). Bad options raise
    :class:`~bowrt.errors.ExportOptionError` subclasses before anything is loaded."""
    variants = parse_variants(variants)
    settings = int8.Int8Settings(method=int8_method, profile=int8_profile, static_tolerance=int8_static_tolerance,
                                 embeddings=int8_embeddings)
    gate_table = gates if isinstance(gates, dict) else parity.parse_gates(gates)
    eval_gate.check_options(variants, eval_data, eval_max_drop)
    out = Path(out)
    if out.exists() and not force:
        raise ExportOutputExistsError(f"{str(out)!r} already exists; pass --force (force=True) to replace it")

    t0 = time.perf_counter()
    log(f"loading {model} ...")
    src = source.load_source(
        model, revision=revision, pooling=pooling, query_max_length=query_max_length, passage_max_length=passage_max_length
    )
    rules = TextRules(query_max_length=src.query_max_length, passage_max_length=src.passage_max_length)
    log(f"  {src.config.model_type}: {src.num_layers} layers, hidden {src.hidden_size}, {src.num_heads} heads; "
        f"pooling {src.pooling}; max length query {rules.query_max_length} / passage {rules.passage_max_length}")
    with tempfile.TemporaryDirectory(prefix="bowrt-export-") as tmp:
        work = Path(tmp)
        tokenizer, fused, counts = _fused_graph(src, work, log)
        log("computing PyTorch reference vectors on the probe set ...")
        probe = Probe(src, tokenizer, rules)
        job = _Job(src=src, tokenizer=tokenizer, rules=rules, work=work, fused=fused, gates=gate_table,
                   int8_settings=settings, log=log)
        built = {variant: _build_variant(variant, job, probe) for variant in variants}
        verdict = _retrieval_gate(built, job, probe, counts, out, eval_data, eval_max_drop)
        manifests = _write_bundles(out, built, job, probe=probe, counts=counts, force=force)
    log(f"done in {time.perf_counter() - t0:.1f} s")
    eval_gate.raise_if_refused(verdict)
    return manifests


def _retrieval_gate(built: dict[str, _Built], job: _Job, probe: Probe, counts: dict[str, int], out: Path,
                    eval_data: str | Path | None, max_drop: float) -> dict[str, Any] | None:
    """``--eval``: the verdict of :mod:`bowrt.export.eval_gate`, on staged copies of the bundles so that
    a refused int8 never reaches the output folder (it is taken out of ``built``)."""
    if eval_data is None:
        return None
    _write_bundles(job.work / "staged", built, job, probe=probe, counts=counts, force=True)
    verdict = eval_gate.run(job.work / "staged", eval_data, out / "eval", max_drop, job.log)
    if not verdict["passed"]:
        built.pop("int8")
    return verdict
