"""``bowrt-<variant>``: a bowrt bundle through :class:`bowrt.runtime.Encoder`, the system the bench is about."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.harness.adapters.common import BATCH
from benchmarks.harness.spec import SystemSpec, Unavailable, bowrt_variant
from bowrt.bundle import DATA_FILE, MODEL_FILE


class BowrtSystem:
    """A bowrt bundle through the Encoder; keeps each call's timings while ``record`` is set.

    ``encoder`` is the :class:`bowrt.runtime.Encoder` itself: the concurrency workload drives
    its dynamic batcher (only bowrt systems run that workload).
    """

    sorts_by_length = True

    def __init__(self, spec: SystemSpec):
        from bowrt.runtime import Encoder
        self.spec = spec
        if bowrt_variant(spec.name) == "fp16" and spec.device != "cuda":
            raise Unavailable("fp16 bundles run on GPU providers only (no CUDA here)")
        self.encoder = Encoder(spec.bundle, providers=spec.device, threads=spec.threads)
        lanes = self.encoder.batch_lanes
        narrow = self.encoder.narrow_budget
        self.batching = (f"sorts by length, token budget {self.encoder.max_batch_tokens} (padding counted)"
                         + "".join(f", {t} for rows of at most {w}" for w, t in narrow) + ", pads per batch"
                         + (f", {lanes} batch lanes" if lanes > 1 else ""))
        # The graph and, for int8 (bowrt >= 0.6), the data file its weights are in.
        self.model_bytes = sum(e["bytes"] for name, e in self.encoder.manifest.files.items()
                               if name in (MODEL_FILE, DATA_FILE))
        self.record = False
        self.log: list[tuple[float, Any]] = []  # (end-to-end seconds, Timings) per call while recording

    def batches(self, texts: list[str], kind: str) -> list[list[int]]:
        """The Encoder's own batches for ``texts`` (its planner, its budget), joined in run order into
        groups of at least :data:`BATCH` passages, as many as a peer's batch. A group starts where one
        of the Encoder's batches starts, so ``encode`` with a group's passages plans those very batches
        (the planner is a greedy pass over rows sorted longest first)."""
        enc = self.encoder
        groups, cur = [], []
        for b in enc.plan(enc.tokenize(kind, texts).lengths):
            cur += b
            if len(cur) >= BATCH:
                groups.append(cur)
                cur = []
        return groups + [cur] if cur else groups

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        t0 = time.perf_counter()
        if not self.record:
            return self.encoder.encode_queries(texts) if kind == "query" else self.encoder.encode_passages(texts)
        got = self.encoder.encode_timed(kind, texts)
        self.log.append((time.perf_counter() - t0, got.timings))
        return got.vectors
