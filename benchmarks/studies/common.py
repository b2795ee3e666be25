"""What several studies share: a synthetic token corpus batched as the runtime batches it, and ONNX Runtime's
profiler summed by operator.

The corpus is token ids drawn at random (ids 1000-19999, lengths 20 to ``high - 1``), so
no tokenizer is needed and every study that asks for the same ``n`` and seed gets the same
rows. The batches are the runtime's: sorted by length, under its default CPU token budget,
each padded to its longest row (:func:`bowrt.runtime.plan.plan_batches`).
"""

from __future__ import annotations

import collections
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bowrt.runtime.plan import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, plan_batches
from bowrt.runtime.session import ort_session
from bowrt.runtime.tokenize import pad_batch

Batch = tuple[np.ndarray, np.ndarray]  # (input_ids, attention_mask), int64


def token_corpus(n: int, rng: np.random.Generator, high: int = 257) -> list[list[int]]:
    """``n`` rows of random token ids, of 20 to ``high - 1`` tokens each."""
    return [list(rng.integers(1000, 20000, int(k))) for k in rng.integers(20, high, n)]


def runtime_batches(corpus: list[list[int]]) -> list[Batch]:
    """The padded batches the runtime would run ``corpus`` in (default CPU budget)."""
    plan = plan_batches([len(c) for c in corpus], DEFAULT_MAX_BATCH_TOKENS["cpu"], DEFAULT_MAX_BATCH_SIZE)
    return [pad_batch([corpus[i] for i in b]) for b in plan]


def corpus_batches(n: int, seed: int = 0, high: int = 257) -> list[Batch]:
    """:func:`token_corpus` of a fresh generator, batched by :func:`runtime_batches`."""
    return runtime_batches(token_corpus(n, np.random.default_rng(seed), high))


def profiled_session(model: Path, threads: int, tag: str, **options: Any) -> Any:
    """The runtime's own session builder (``ort_session``), with ONNX Runtime's profiler on."""
    return ort_session(model, threads=threads, profile_prefix=str(Path(tempfile.gettempdir()) / f"bowrt_{tag}"), **options)


def feed(session: Any, batch: Batch) -> dict[str, np.ndarray]:
    """The graph's declared inputs from (ids, mask); token_type_ids zeros where the graph takes them."""
    ids, mask = batch
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {i.name: feeds[i.name] for i in session.get_inputs()}


def kernel_seconds(session: Any, skip_runs: int = 0) -> collections.Counter:
    """End the session's profile and sum its kernel time by operator type, in seconds, leaving out the
    first ``skip_runs`` runs (a warm-up); the trace file is removed."""
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    timed_from = runs[skip_runs] if len(runs) > skip_runs else 0
    out: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= timed_from:
            out[e["args"]["op_name"]] += e["dur"] / 1e6
    return out
