"""What one benchmark run is asked to do: :class:`BenchConfig`, and the constants the run is built from."""

from __future__ import annotations

from dataclasses import dataclass

WORKLOADS = ("latency", "batch32x128", "corpus", "concurrent")
DEFAULT_AGAINST = ("torch", "torch-bf16", "st", "st-onnx", "ort-qint8", "optimum", "fastembed", "ct2", "openvino", "llama.cpp")
CLIENTS = (1, 4, 16, 64)  # closed-loop clients of the concurrency workload
MODES = ("batched", "direct")
# Batch-1 latency runs the systems in turns of LATENCY_BLOCK consecutive calls each (the same
# queries for every system), the order rotating by one system a turn. Call by call measured
# 2-3x the latency a system has alone (AMD EPYC, avx512_vnni, 2 threads: 23 ms against 7.9 ms
# for one bowrt int8 session between two others, and still 15 ms with a 30 ms gap), because
# the previous system's idle intra-op threads spin; in turns of 16 calls, after a
# LATENCY_BLOCK_PAUSE_S pause and with the first LATENCY_WARM_CALLS calls of each turn not
# counted, each system measured what it does alone (7.6 / 7.0 / 6.5 ms against 8.9 / 7.3 / 6.8).
LATENCY_BLOCK = 16
LATENCY_WARM_CALLS = 2  # not counted at the start of every turn (the previous system's threads still spin)
LATENCY_BLOCK_PAUSE_S = 0.05  # untimed, before every turn
# Passage-length buckets of the corpus (tokens with [CLS]/[SEP]): (label, largest length). A passage
# goes to the first bucket it fits; the last takes anything longer (passages are cut at 256 anyway).
CORPUS_BUCKETS = (("<=64", 64), ("65-128", 128), ("129-256", 256))
PAUSE_S = 0.2  # between systems: lets the previous one's spinning worker threads go idle
QUICK_BUDGET_S = 120.0  # rounds + memory + accuracy; imports, loading and warm-up (~1 min) come on top
QUICK_MIN_CORPUS = 32
WARM_CORPUS = 16  # passages of the corpus run in the warm-up (FLOP-normalized for the estimate)
# --quick leaves peers out in this order until its estimate fits QUICK_BUDGET_S, then shrinks the
# corpus. It never leaves out the reference and the peers of the main environment that lead their
# precision (CTranslate2 int8 and fp32): a quick run always shows bowrt next to them.
QUICK_DROP_ORDER = ("llama.cpp", "fastembed", "st", "torch-bf16", "st-onnx-O3", "st-onnx", "optimum", "openvino-fp32",
                    "st-onnx-int8", "openvino-int8", "ort-qint8")
QUICK_KEEP = ("torch", "ct2-int8", "ct2-fp32")
# Rough share of the GEMM ceiling a system reaches, for the estimate made before anything ran.
GUESSED_EFFICIENCY = {"fp32": 0.5, "bf16": 0.3, "int8": 0.3, "fp16": 0.3}


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
    buckets: bool = True  # each round ends with one call per system and length bucket (CORPUS_BUCKETS)

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
