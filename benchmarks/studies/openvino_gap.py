"""Why is openvino-int8 faster than bowrt int8 on a corpus, and would OpenVINO as a backend for
bowrt's bundles close the gap? (issue 19: "measure before you build").

Answer: docs/benchmarks.md, "Where the corpus gap to openvino-int8 comes from".

    PY=$(python -m benchmarks.harness.peer_env path)/bin/python   # OpenVINO and NNCF live there
    $PY benchmarks/studies/openvino_gap.py [--rounds 3] [--passages 190] [--threads 2]

Needs the bert-base twin's bowrt bundles and the openvino peers' files in the bench cache,
which one run of ``python -m benchmarks --against openvino`` leaves there. On one mixed
corpus (20-255 tokens, bowrt's batching: sorted, 512-token budget), interleaved round by
round, it times:

- bowrt fp32 and int8 as the runtime runs them (ONNX Runtime);
- OpenVINO on bowrt's fp32 bundle, in f32 and in bf16 (where the CPU has it);
- OpenVINO on bowrt's int8 bundle (it may not load; the reason is printed);
- OpenVINO with int8 weights (``nncf.compress_weights`` INT8_SYM) and its dynamic int8
  activations (``DYNAMIC_QUANTIZATION_GROUP_SIZE``), the form closest to bowrt's
  per-token int8;
- the ``openvino-int8`` peer (NNCF static post-training quantization).

Each row has the corpus rate (median [min-max]), the lowest cosine to bowrt fp32 over the
corpus's CLS vectors (the twin's weights are random: a relative figure; the bench's
accuracy table has the real-weights one) and alone-vs-batch for one passage. Then where
the time goes: ONNX Runtime's profiler by operator for bowrt int8, OpenVINO's per-layer
counters for openvino-int8, and the int8 GEMM rate of ONNX Runtime's kernel at 1 and 2
threads.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness import machine  # noqa: E402
from benchmarks.harness.models import cache_dir  # noqa: E402
from benchmarks.studies.common import corpus_batches, feed, kernel_seconds, profiled_session  # noqa: E402
from bowrt.runtime.host import cpu_flags, summary  # noqa: E402
from bowrt.runtime.session import ort_session  # noqa: E402

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def _one(pattern: str) -> Path:
    found = sorted(cache_dir().glob(pattern))
    if not found:
        raise SystemExit(f"nothing matches {cache_dir() / pattern}: run `python -m benchmarks --against openvino` once")
    return found[-1]


def _cls(out: np.ndarray) -> np.ndarray:
    out = np.asarray(out, dtype=np.float32)
    return out[:, 0] if out.ndim == 3 else out


def ort_runner(path: Path, threads: int):
    sess = ort_session(path, threads=threads, disabled=["SkipLayerNormFusion"])

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return _cls(sess.run(None, feed(sess, (ids, mask)))[0])
    return run


def ov_runner(model, threads: int, **config):
    import openvino as ov

    cm = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", **config})
    req = cm.create_infer_request()
    names = {i.get_any_name() for i in cm.inputs}

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return _cls(req.infer({k: v for k, v in feeds.items() if k in names})[cm.outputs[0]])
    return run, req


def systems(bundles: Path, peers: Path, threads: int, log) -> tuple[dict, dict]:
    """name -> run(ids, mask); name -> why it could not run."""
    import nncf
    import openvino as ov

    runs, failed = {}, {}
    runs["bowrt fp32 (ONNX Runtime)"] = ort_runner(bundles / "fp32" / "model.onnx", threads)
    runs["bowrt int8 (ONNX Runtime)"] = ort_runner(bundles / "int8" / "model.onnx", threads)
    bf16 = "avx512_bf16" in cpu_flags() or "amx_bf16" in cpu_flags()
    for prec in ("f32",) + (("bf16",) if bf16 else ()):
        runs[f"OpenVINO {prec} on bowrt's fp32 bundle"] = ov_runner(str(bundles / "fp32" / "model.onnx"), threads,
                                                                  INFERENCE_PRECISION_HINT=prec)[0]
    try:
        runs["OpenVINO on bowrt's int8 bundle"] = ov_runner(str(bundles / "int8" / "model.onnx"), threads)[0]
    except Exception as e:  # noqa: BLE001  (the reason is the result)
        failed["OpenVINO on bowrt's int8 bundle"] = _why(e)
    log("compressing the plain export's weights to int8 (nncf.compress_weights)")
    compressed = nncf.compress_weights(ov.Core().read_model(str(peers / "onnx" / "model.onnx")),
                                       mode=nncf.CompressWeightsMode.INT8_SYM)
    for prec in ("f32",) + (("bf16",) if bf16 else ()):
        runs[f"OpenVINO int8 weights + dynamic int8 activations (group 32), {prec}"] = ov_runner(
            compressed, threads, INFERENCE_PRECISION_HINT=prec, DYNAMIC_QUANTIZATION_GROUP_SIZE=32)[0]
    runs["openvino-int8 peer (NNCF static)"] = ov_runner(str(peers / "openvino" / "openvino_model_int8.xml"), threads)[0]
    return runs, failed


def agreement(out: list[np.ndarray], ref: list[np.ndarray]) -> float:
    a, b = np.concatenate(out), np.concatenate(ref)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def alone_vs_batch(run, batch: tuple[np.ndarray, np.ndarray]) -> float:
    ids, mask = batch
    n = int(mask[0].sum())
    alone, inside = run(ids[:1, :n], mask[:1, :n])[0], run(ids, mask)[0]
    return float(alone @ inside / (np.linalg.norm(alone) * np.linalg.norm(inside)))


def ort_profile(path: Path, batches, threads: int) -> collections.Counter:
    sess = profiled_session(path, threads, "gap", disabled=["SkipLayerNormFusion"])
    for b in batches:
        sess.run(None, feed(sess, b))
    return kernel_seconds(sess)


def ov_profile(xml: Path, batches, threads: int) -> collections.Counter:
    run, req = ov_runner(str(xml), threads, PERF_COUNT=True)
    ops: collections.Counter = collections.Counter()
    for b in batches:
        run(*b)
        for p in req.profiling_info:
            ops[f"{p.node_type} ({p.exec_type})"] += p.real_time.total_seconds()
    return ops


def gemm_rate(threads: int, m: int = 512, k: int = 768, n: int = 3072) -> float:
    """u8 x s8 MatMulInteger TOPS of ONNX Runtime's kernel (constant weights), best of 1 s of calls."""
    return machine._best_rate(machine._ort_matmul(m, k, n, threads, integer=True), 2.0 * m * k * n, 1.0) / 1e12


def _why(e: Exception) -> str:
    """OpenVINO's conversion report, down to the operators it could not convert."""
    text = " ".join(str(e).split())
    failed = re.findall(r"-- ([\w.-]+) with a message", text)
    return f"OpenVINO could not convert {', '.join(dict.fromkeys(failed))}" if failed else text[:300]


def _table(title: str, ops: collections.Counter, top: int = 8) -> list[str]:
    total = sum(ops.values())
    lines = [f"\n{title}: {total:.2f} s of kernel time\n", "| operator | s | share |", "|---|---|---|"]
    lines += [f"| {op} | {s:.2f} | {100 * s / total:.0f}% |" for op, s in ops.most_common(top)]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--passages", type=int, default=190)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    batches = corpus_batches(args.passages, high=256)  # 20-255 tokens, as its docs runs
    bundles, peers = _one("bundles/bert-base-twin-*"), _one("peers/openvino-bert-base-twin-*")
    runs, failed = systems(bundles, peers, args.threads, log)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    outs: dict[str, list[np.ndarray]] = {}
    for name, run in runs.items():  # warm-up
        run(*batches[0])
    for r in range(args.rounds):
        for name, run in runs.items():
            time.sleep(0.2)  # the previous system's spinning threads go idle first
            t = time.perf_counter()
            outs[name] = [run(*b) for b in batches]
            rates[name].append(args.passages / (time.perf_counter() - t))
        log(f"round {r + 1}/{args.rounds} done")
    ref = outs["bowrt fp32 (ONNX Runtime)"]
    print(f"{args.passages} passages, {len(batches)} batches, {args.threads} threads, {args.rounds} rounds; "
          f"host: {summary()}; flags {' '.join(f for f in ISA_FLAGS if f in cpu_flags())}\n")
    print("| system | passages/s | min cos vs bowrt fp32 | alone vs batch |\n|---|---|---|---|")
    for name, run in runs.items():
        v = rates[name]
        print(f"| {name} | {statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}] | {agreement(outs[name], ref):.5f} | "
              f"{alone_vs_batch(run, batches[len(batches) // 2]):.6f} |")
    for name, why in failed.items():
        print(f"| {name} | cannot run: {why} | | |")
    print("\n".join(_table("bowrt int8, ONNX Runtime's profiler", ort_profile(bundles / "int8" / "model.onnx", batches, args.threads))))
    print("\n".join(_table("openvino-int8, OpenVINO's counters", ov_profile(peers / "openvino" / "openvino_model_int8.xml",
                                                                          batches, args.threads))))
    print(f"\nONNX Runtime u8 x s8 GEMM, 512 x 768 @ 768 x 3072: {gemm_rate(1):.2f} TOPS at 1 thread, "
          f"{gemm_rate(args.threads):.2f} at {args.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
