"""How does bowrt's per-token int8 compare with ONNX Runtime's standard dynamic int8, in speed, batch
invariance and agreement? (issue 7), side by side in one process on the same machine.

Answer: docs/int8.md, "Agreement and speed against the standard dynamic int8"; the run of
issue 7 in docs/benchmarks.md, "Issue 7: bowrt int8 vs the standard dynamic int8".

    python benchmarks/studies/int8_compare.py [--rounds 5] [--passages 200] [--model DIR] [--threads N]

Speed: the bert-base twin's fused fp32 graph, quantized both ways (and run as fp32),
interleaved round by round; medians; the corpus is --passages mixed-length passages
(20-256 tokens, default 200) batched as the runtime batches them (length-sorted, under
its default CPU token budget). bowrt's graphs (fp32, smoothquant) have their layer norms
split as the export ships them; "dynamic" is the standard graph as peers ship it, and
"dynamic+split" the same with bowrt's layer-norm rewrite. Batch invariance: a passage alone vs inside a
batch of 32 mixed-length passages (min cosine over 32 passages). Agreement: real
weights (all-MiniLM-L6-v2), min cosine and overlap@10 against PyTorch fp32 on the
probe set, for CLS and mean pooling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness.models import minilm_folder, twin_folder  # noqa: E402
from benchmarks.studies.common import runtime_batches, token_corpus  # noqa: E402
from bowrt.bundle import TextRules  # noqa: E402
from bowrt.export import int8, optimize, parity, pipeline, probes, source, to_onnx  # noqa: E402


GRAPHS = ("fp32", "dynamic", "dynamic+split", "smoothquant")
# bowrt's int8 as `bowrt export` writes it: smoothquant plus the fp32-fallback search,
# which runs on real weights only (agreement rows; the twin's is the smoothquant graph).
EXPORTED = "int8 bundle"


def build(
    model: str, work: Path, pooling: str | None = None, *,
    static_tolerance: float = int8.STATIC_TOLERANCE, static_roles: frozenset[str] | None = None,
) -> tuple[source.Source, object, dict[str, Path]]:
    """Fused fp32, dynamic int8 and smoothquant int8 graphs of ``model`` in ``work``. The
    smoothquant graph's activation modes are the export's (``static_tolerance``), or static
    exactly for the nodes of ``static_roles`` (e.g. {"attention", "attn_out"})."""
    import onnx

    src = source.load_source(model, pooling=pooling)
    tok = pipeline._save_tokenizer(src, work / "tokenizer.json")
    fused = work / "fp32.onnx"
    optimize.fuse(to_onnx.export_onnx(src.model, src.pooling, work / "raw.onnx"), fused,
                  num_heads=src.num_heads, hidden_size=src.hidden_size)
    int8.quantize_dynamic_int8(fused, work / "dynamic.onnx")
    cal = probes.load_text_set("calibration")
    cq, cp = probes.tokenized(tok, cal, TextRules())
    batches = [(ids, mask) for _, ids, mask in probes.padded_batches(cq + cp, 16)]
    graph = onnx.load(str(fused))
    stats = int8.activation_stats(fused, int8.find_targets(graph), batches)
    alphas, modes = int8.choose_plan(graph, stats, tolerance=static_tolerance)  # as the export's first step
    if static_roles is not None:
        static_alphas, token_alphas = int8.choose_plan(graph, stats, tolerance=float("inf"))[0], int8.choose_alphas(graph, stats)
        modes = {t.name: "static" if t.role in static_roles else "token" for t in int8.find_targets(graph)}
        alphas = {n: static_alphas[n] if m == "static" else token_alphas[n] for n, m in modes.items()}
    int8.quantize_smooth(fused, work / "smoothquant.onnx", stats, alpha=alphas, modes=modes)
    # As bowrt ships them: layer norms split for ORT's CPU kernels, and with CLS pooling the
    # last layer's tail on the CLS row only (export/optimize.py). The standard dynamic graph
    # stays as sentence-transformers and optimum ship it; "dynamic+split" shows what the
    # layer-norm rewrite gives it.
    optimize.split_skip_layer_norms(work / "dynamic.onnx", work / "dynamic+split.onnx")
    for name in ("smoothquant", "fp32"):
        optimize.split_skip_layer_norms(work / f"{name}.onnx", work / f"{name}.onnx")
        if src.pooling == "cls":
            optimize.cls_tail(work / f"{name}.onnx", work / f"{name}.onnx")
    return src, tok, {name: work / f"{name}.onnx" for name in GRAPHS}


def speed(paths: dict[str, Path], rounds: int, threads: int, passages: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    corpus = token_corpus(passages, rng)
    batches = runtime_batches(corpus)  # as the runtime batches: length-sorted, under its token budget
    shapes = {"batch1 query ms": (1, 13), "32x128 seq/s": (32, 128)}
    runs = {name: probes.ort_runner(str(p), threads=threads) for name, p in paths.items()}
    feeds = {k: rng.integers(1000, 20000, s).astype(np.int64) for k, s in shapes.items()}
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in [*shapes, "corpus seq/s"]} for n in runs}
    for r in range(rounds + 1):  # round 0 is the warm-up
        for name, run in runs.items():
            for key, ids in feeds.items():
                reps = 20 if key.startswith("batch1") else 1
                t = time.perf_counter()
                for _ in range(reps):
                    run(ids, np.ones_like(ids))
                dt = (time.perf_counter() - t) / reps
                if r:
                    times[name][key].append(dt * 1000 if key.startswith("batch1") else ids.shape[0] / dt)
            t = time.perf_counter()
            for batch in batches:
                run(*batch)
            if r:
                times[name]["corpus seq/s"].append(len(corpus) / (time.perf_counter() - t))
    return {n: {k: statistics.median(v) for k, v in d.items()} for n, d in times.items()}


def invariance(path: Path, tok) -> float:
    texts = probes.load_text_set("probes")
    _, p_ids = probes.tokenized(tok, texts, TextRules())
    run = probes.ort_runner(str(path))
    ids = p_ids[:32]
    batched = probes.encode_ids(run, ids, batch_size=32)
    alone = np.concatenate([probes.encode_ids(run, [x]) for x in ids])
    return float(parity.cosines(alone, batched).min())


def agreement(model: str, pooling: str, work: Path) -> tuple[dict[str, dict[str, float]], dict[str, Path], list[str]]:
    """Agreement of every graph, and of the int8 bundle the export ships (fp32-fallback
    search included); returns the figures, the graph paths and the bundle's fp32 nodes."""
    from bowrt.bundle import read_manifest
    from bowrt.export import export_model

    src, tok, paths = build(model, work, pooling)
    export_model(model, work / "bundle", ("int8",), pooling=pooling, force=True, log=lambda _m: None)
    paths = {**paths, EXPORTED: work / "bundle" / "int8" / "model.onnx"}
    probe = parity.Probe(src, tok, TextRules())
    out = {}
    for name, path in paths.items():
        run = probes.ort_runner(str(path))
        m = parity.compare(probe.ref_q, probe.ref_p, probes.encode_ids(run, probe.q_ids), probes.encode_ids(run, probe.p_ids))
        out[name] = {"min_cosine": m["min_cosine"], "overlap_at_10": m["overlap_at_10"]}
    return out, paths, read_manifest(work / "bundle" / "int8").quantization["fp32_nodes"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--passages", type=int, default=200, help="mixed-corpus size (issue 7 asks for 1000)")
    ap.add_argument("--model", default=None, help="speed model folder (default: the bert-base twin)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "twin").mkdir()
        _, tok, paths = build(args.model or str(twin_folder(print)), tmp / "twin")
        s = speed(paths, args.rounds, args.threads or 0, args.passages)
        inv = {name: invariance(p, tok) for name, p in paths.items()}
        acc, kept = {}, {}
        for pooling in ("mean", "cls"):
            (tmp / pooling).mkdir()
            acc[pooling], real_paths, kept[pooling] = agreement(str(minilm_folder()), pooling, tmp / pooling)
            if pooling == "mean":  # what the fp32 fallback costs on real weights
                import onnx

                n_targets = len(int8.find_targets(onnx.load(str(real_paths["fp32"]))))
                fallback = speed({k: real_paths[k] for k in ("smoothquant", EXPORTED)}, args.rounds,
                                 args.threads or 0, args.passages)
    print(f"\nspeed: bert-base twin, {args.rounds} rounds, medians, corpus of {args.passages}; "
          "agreement: all-MiniLM-L6-v2 vs PyTorch fp32\n")
    print("| graph | batch-1 query ms | 32x128 seq/s | mixed corpus seq/s | alone vs batch-32 min cos "
          "| min cos (mean) | overlap@10 (mean) | min cos (CLS) | overlap@10 (CLS) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in (*GRAPHS, EXPORTED):
        a = [acc[p].get(name, {}) for p in ("mean", "cls")]
        cells = [f"{x.get('min_cosine', 1):.4f} | {x.get('overlap_at_10', 1):.3f}" for x in a]
        if name in s:
            row = f"{s[name]['batch1 query ms']:.1f} | {s[name]['32x128 seq/s']:.2f} | {s[name]['corpus seq/s']:.2f} | {inv[name]:.6f}"
        else:
            row = "— | — | — | —"
        print(f"| {name} | {row} | {cells[0]} | {cells[1]} |")
    print(f"\n{EXPORTED}: fp32 nodes kept by the export's search on MiniLM: mean {len(kept['mean'])}, "
          f"CLS {len(kept['cls'])} (of {n_targets})")
    print("smoothquant / dynamic:", ratios(s["smoothquant"], s["dynamic"]))
    print(f"MiniLM (mean), {EXPORTED} / smoothquant (the cost of its {len(kept['mean'])} fp32 nodes):",
          ratios(fallback[EXPORTED], fallback["smoothquant"]))
    return 0


def ratios(new: dict[str, float], old: dict[str, float]) -> str:
    return (f"batch-1 {old['batch1 query ms'] / new['batch1 query ms']:.2f}x, "
            f"32x128 {new['32x128 seq/s'] / old['32x128 seq/s']:.2f}x, corpus {new['corpus seq/s'] / old['corpus seq/s']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
