"""What the systems are asked to do: synthetic texts of controlled length, and the timed calls.

Texts are generated, not sampled from a corpus: a seeded generator draws whole
words from the model's own WordPiece vocabulary (lower-case letters only, so
each word is exactly one token), which pins every text's token count. The same
seed gives the same texts on every machine, so runs compare.

Each system is called the way its users would call it: one call with the whole
list, and the system's own batching (some sort by length, some do not; see
``System.batching``). Times are wall-clock (``perf_counter``) around that call.
Batch-1 latency is the exception to one system at a time: the systems take short turns
(:func:`interleaved_latency`), so that their calls can be paired.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bowrt.errors import OptionError

WORD = re.compile(r"^[a-z]{3,10}$")
QUERY_TOKENS = (6, 20)  # trivia questions: ~6 to 20 tokens with [CLS]/[SEP] and "?"
CORPUS_TOKENS = (20, 256)  # passage lengths, uniform; 256 is the bundle's passage max length
BATCH_ROWS, BATCH_TOKENS = 32, 128


@dataclass(frozen=True)
class Texts:
    """The texts of one run and their token counts (special tokens included)."""

    queries: list[str]
    query_tokens: list[int]
    batch: list[str]  # BATCH_ROWS passages of exactly BATCH_TOKENS tokens
    batch_tokens: list[int]
    corpus: list[str]
    corpus_tokens: list[int]

    def describe(self) -> dict[str, Any]:
        def span(x: list[int]) -> dict[str, Any]:
            return {"n": len(x), "min_tokens": min(x), "max_tokens": max(x), "mean_tokens": round(float(np.mean(x)), 1)}

        return {"queries": span(self.query_tokens), "batch": span(self.batch_tokens), "corpus": span(self.corpus_tokens)}


class TextMaker:
    """Seeded texts with exact token counts for a BERT WordPiece tokenizer."""

    def __init__(self, tokenizer_file: str | Path, seed: int = 1234):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.no_padding()
        self._tok.no_truncation()
        vocab = self._tok.get_vocab()
        self.words = sorted(w for w in vocab if WORD.match(w))
        if len(self.words) < 100:
            raise ValueError(f"{tokenizer_file}: too few whole-word tokens ({len(self.words)}) to build texts; a BERT WordPiece vocabulary is expected")
        self._rng = np.random.default_rng(seed)

    def count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=True)]

    def _words(self, n: int) -> list[str]:
        return [self.words[i] for i in self._rng.integers(0, len(self.words), size=max(n, 0))]

    def texts(self, lengths: list[int], suffix: str = "") -> list[str]:
        """One text per target length (tokens with [CLS]/[SEP]); each is checked and, if needed, adjusted."""
        extra = self.count([suffix])[0] - 2 if suffix else 0  # tokens the suffix adds
        out = [" ".join(self._words(n - 2 - extra)) + suffix for n in lengths]
        for _ in range(8):  # whole-word tokens make this exact at once; the loop guards other vocabularies
            got = self.count(out)
            bad = [i for i, (g, n) in enumerate(zip(got, lengths)) if g != n]
            if not bad:
                return out
            for i in bad:
                words = out[i][: len(out[i]) - len(suffix)].split()
                words = words[: max(len(words) - (got[i] - lengths[i]), 0)] if got[i] > lengths[i] else words + self._words(lengths[i] - got[i])
                out[i] = " ".join(words) + suffix
        raise ValueError("could not build texts of the requested token lengths with this tokenizer")


def make_texts(tokenizer_file: str | Path, *, queries: int, corpus: int, seed: int = 1234) -> Texts:
    maker = TextMaker(tokenizer_file, seed)
    rng = np.random.default_rng(seed + 1)
    q_len = [int(x) for x in rng.integers(QUERY_TOKENS[0], QUERY_TOKENS[1] + 1, size=queries)]
    c_len = [int(x) for x in rng.integers(CORPUS_TOKENS[0], CORPUS_TOKENS[1] + 1, size=corpus)]
    b_len = [BATCH_TOKENS] * BATCH_ROWS
    q = maker.texts(q_len, suffix="?")
    return Texts(q, q_len, maker.texts(b_len), b_len, maker.texts(c_len), c_len)


# --- timed calls ---------------------------------------------------------------------
EncodeFn = Callable[[list[str], str], np.ndarray]


def interleaved_latency(encoders: dict[str, EncodeFn], queries: list[str], calls: int, shift: int = 0, *,
                        block: int = 16, warm: int = 2, pause_s: float = 0.0,
                        ) -> tuple[dict[str, list[float]], list[int], dict[str, Exception]]:
    """Single-query calls, the systems taking turns of ``block`` consecutive calls; call j of every
    system encodes ``queries[j % len]``, so call j of one system pairs with call j of another.

    The order rotates by one system a turn (A B C, then B C A, ...; ``shift`` more in later rounds),
    so that this VM's drift between minutes hits every system alike, a few seconds apart at most.
    The first ``warm`` calls of each turn are made but not counted: the previous system's idle
    threads may still spin then. ``pause_s``: an untimed sleep before every turn. Turns go on until
    ``calls`` calls of each system count. Returns (milliseconds of every call made, per system; the
    indices of the counted calls, the same for every system; the exception of each system that
    raised). A system that raises leaves the rotation; the others go on.
    """
    if block <= warm:
        raise OptionError(f"a latency turn of {block} calls leaves none counted after {warm} warm-up calls")
    samples: dict[str, list[float]] = {n: [] for n in encoders}
    failed: dict[str, Exception] = {}
    turns = -(-calls // (block - warm))
    kept = [t * block + i for t in range(turns) for i in range(warm, block)][:calls]
    for t in range(turns):
        alive = [n for n in encoders if n not in failed]
        k = (t + shift) % max(len(alive), 1)
        for n in alive[k:] + alive[:k]:
            if pause_s:
                time.sleep(pause_s)
            try:
                for j in range(t * block, (t + 1) * block):
                    t0 = time.perf_counter()
                    encoders[n]([queries[j % len(queries)]], "query")
                    samples[n].append((time.perf_counter() - t0) * 1000.0)
            except Exception as e:  # this system is out of the run; the turn goes on without it
                failed[n] = e
    return {n: v for n, v in samples.items() if n not in failed}, kept, failed


def piece_order(counts: dict[str, int], shift: int = 0) -> list[tuple[str, int]]:
    """The turns of an interleaved corpus call: ``(system, piece)`` for every piece of every system
    (``counts[system]`` pieces each), once. The next turn always goes to the system least far
    through its own pieces (the fraction done; ties in the order of ``counts`` rotated by ``shift``),
    so each system's pieces spread evenly over the whole call: a system of 5 pieces and one of 40
    both reach their halfway point at the same time, and a slow phase of this VM lands on every
    system's pieces alike."""
    names = [n for n, c in counts.items() if c > 0]
    k = shift % max(len(names), 1)
    names = names[k:] + names[:k]
    done = dict.fromkeys(names, 0)
    turns: list[tuple[str, int]] = []
    while alive := [n for n in names if done[n] < counts[n]]:
        n = min(alive, key=lambda m: (done[m] / counts[m], names.index(m)))
        turns.append((n, done[n]))
        done[n] += 1
    return turns


def check_groups(groups: list[list[int]], n: int) -> list[list[int]]:
    """``groups`` if it is a partition of ``range(n)`` (every passage in exactly one group), else
    ValueError: a system's batches that lost or repeated a passage would time other work."""
    seen = sorted(i for g in groups for i in g)
    if seen != list(range(n)) or any(not g for g in groups):
        raise ValueError(f"the system's batches do not cover its {n} passages exactly once")
    return groups


def corpus_buckets(texts: Texts, bounds: tuple[tuple[str, int], ...]) -> dict[str, tuple[list[str], list[int]]]:
    """The corpus split by token count: ``{label: (passages, token counts)}``, each in corpus order.

    A passage goes to the first bucket whose largest length it fits, the last bucket takes
    anything longer: every passage lands in exactly one bucket. Empty buckets are left out.
    """
    out: dict[str, tuple[list[str], list[int]]] = {}
    for text, n in zip(texts.corpus, texts.corpus_tokens):
        label = next((lb for lb, top in bounds if n <= top), bounds[-1][0])
        passages, tokens = out.setdefault(label, ([], []))
        passages.append(text)
        tokens.append(n)
    return {lb: out[lb] for lb, _ in bounds if lb in out}  # in bucket order


def throughput(encode: EncodeFn, passages: list[str]) -> float:
    """Seconds for one call with the whole list."""
    t0 = time.perf_counter()
    out = encode(passages, "passage")
    dt = time.perf_counter() - t0
    if len(out) != len(passages):
        raise RuntimeError(f"got {len(out)} vectors for {len(passages)} passages")
    return dt


@dataclass(frozen=True)
class ConcurrentResult:
    clients: int
    mode: str  # "batched" (DynamicBatcher) | "direct" (one encode call per request)
    requests: int
    seconds: float
    latencies_ms: list[float]
    mean_batch_size: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def concurrent(
    encoder: Any, queries: list[str], clients: int, duration_s: float, mode: str, max_wait_ms: float | None = None
) -> ConcurrentResult:
    """``clients`` closed-loop threads, each sending one query and waiting for it, for ``duration_s``.

    ``batched``: each caller submits its query to ``encoder.batcher("query")``, the
    public API's path (and the server's): it tokenizes in the caller's thread, and the
    batcher's one worker runs merged batches. ``direct``: each caller calls
    ``encoder.encode_queries([q])`` itself; concurrent calls share the session.
    """
    from bowrt.runtime.batcher import DEFAULT_MAX_WAIT_MS

    if mode not in ("batched", "direct"):
        raise OptionError(f"mode must be 'batched' or 'direct', got {mode!r}")
    batcher = None
    if mode == "batched":
        batcher = encoder.batcher("query", max_batch_size=64, max_queue=4096, name="bench",
                                  max_wait_ms=DEFAULT_MAX_WAIT_MS if max_wait_ms is None else max_wait_ms)

        def call(q: str) -> None:
            batcher.encode([q])
    else:

        def call(q: str) -> None:
            encoder.encode_queries([q])

    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(k: int) -> None:
        i = k
        start.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                call(queries[i % len(queries)])
                lat[k].append((time.perf_counter() - t0) * 1000.0)
                i += clients
        except BaseException as e:  # reported after the join, not lost in a thread
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + duration_s
    start.wait()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    mean_batch = None
    if batcher is not None:
        mean_batch = batcher.stats().mean_batch_size
        batcher.close()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed in the {mode} run with {clients} clients") from errors[0]
    flat = [x for per in lat for x in per]
    return ConcurrentResult(clients, mode, len(flat), seconds, flat, mean_batch)


OVERHEAD_TARGET = 0.05  # issue 3: tokenize + batch + post at most 5% of a batch-1 call


def overhead(calls: list[tuple[float, Any]]) -> dict[str, Any]:
    """Runtime overhead at batch 1 from ``(end-to-end seconds, Timings)`` per call (``Encoder.encode_timed``; medians, ms).

    ``overhead_fraction``: tokenize + batch + post over end to end; ``outside_ms``:
    end to end minus all four stages (validation, Python call overhead).
    """
    e2e = np.array([e for e, _ in calls])
    t = {k: np.array([getattr(x, k) for _, x in calls]) for k in ("tokenize_s", "batch_s", "inference_s", "post_s")}
    stages = t["tokenize_s"] + t["batch_s"] + t["post_s"]
    frac = float(np.median(stages / e2e))
    return {"calls": len(calls), "e2e_ms": float(np.median(e2e)) * 1000,
            **{k.replace("_s", "_ms"): float(np.median(v)) * 1000 for k, v in t.items()},
            "outside_ms": float(np.median(e2e - stages - t["inference_s"])) * 1000,
            "overhead_fraction": frac, "non_inference_fraction": float(np.median(1 - t["inference_s"] / e2e)),
            "target": OVERHEAD_TARGET, "within_target": frac <= OVERHEAD_TARGET}
