"""The Encoder: bundle in, vectors out.

    enc = Encoder("bundles/int8")
    q = enc.encode_queries(["who wrote hamlet?"])                 # (1, enc.dim) float32
    p = enc.encode_passages([("Hamlet", "Hamlet is a tragedy ..."), "untitled text"])
    scores = q @ p.T
    enc = Encoder.from_pretrained("org/repo", subfolder="int8")    # a bundle on the hub (hub.py)
    v = enc.encode(texts)                    # sentence-transformers' call shape (st_encode.py)

One call: validate every item -> tokenize (query or passage rules) -> plan
batches under a token budget (sorted by length, padding counted) -> pad each
batch to its longest row -> run the session -> put rows back in the caller's
order. For many concurrent callers, :meth:`Encoder.batcher` puts one dynamic
batcher in front: each caller validates and tokenizes in its own thread, once,
and the batcher merges token rows (the server and the bench use it too).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from bowrt.bundle import TOKENIZER_FILE, Manifest, verify_bundle
from bowrt.errors import OptionError
from bowrt.options import check_bool, check_choice, check_int
from bowrt.runtime import host, hub, selfcheck, st_encode
from bowrt.runtime.batcher import DynamicBatcher
from bowrt.runtime.host import physical_cores
from bowrt.runtime.lanes import LANE_NARROW, Lanes, lane_count, run_plan
from bowrt.runtime.plan import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, plan_batches
from bowrt.runtime.providers import CPU, GPU_PROVIDERS, SHORT, build_providers
from bowrt.runtime.session import Session
from bowrt.runtime.tokenize import (
    KINDS,
    Kind,
    TextTokenizer,
    TokenRow,
    Tokens,
    row_ids,
    token_id_rows,
    tokenize,
    tokenize_with,
    validate_passages,
    validate_queries,
)

@dataclass(frozen=True)
class Timings:
    """Where one encode call spent its time (seconds; perf_counter)."""

    tokenize_s: float
    batch_s: float  # planning and padding
    inference_s: float  # session runs, host<->device copies included
    post_s: float  # restoring order, normalizing
    rows: int
    batches: int
    tokens: int  # real tokens
    padded_tokens: int  # tokens the model computed, padding included

    @property
    def total_s(self) -> float:
        return self.tokenize_s + self.batch_s + self.inference_s + self.post_s


@dataclass(frozen=True)
class Encoded:
    """Vectors with the timings of the call that made them: each call its own, so that
    concurrent callers (the server's threads) never read each other's."""

    vectors: np.ndarray
    timings: Timings


class Encoder:
    """Encode queries and passages with a bowrt bundle.

    Args:
        bundle: the bundle folder. Its manifest and the sha256 of every file are
            verified before anything is loaded.
        providers: ``"cpu"``, ``"cuda"``, ``"tensorrt"`` (or full ORT names), or
            a list of them in order of preference. ``None``: CUDA when this
            onnxruntime has it, else CPU. A provider asked for that is not
            available raises :class:`ProviderUnavailableError`. TensorRT runs
            with CUDA then CPU below it for the nodes it cannot take.
        threads: ORT intra-op threads; default one per physical core.
        batch_lanes: batches of one call run side by side, each on ``threads // batch_lanes``
            threads, on a second session of the same graph (``runtime/lanes.py``; the same
            vectors, bit for bit). 1: one batch at a time on all ``threads``. Default: one
            lane per thread for an int8 bundle on CPU (measured faster there), else 1. CPU only.
        max_batch_tokens: token budget of one batch, padding included
            (``rows x longest row``). Default 512 on CPU (measured: larger
            batches ran slower here, see ``benchmarks/studies/budget_sweep.py``), 32768
            on GPU (not measured). It also bounds the memory one batch needs. With lanes
            and no budget asked, batches of rows of at most 64 tokens close at 128, of at
            most 128 at 256, of at most 192 at 384 (``narrow_budget``, measured in
            ``runtime/lanes.py``); an asked budget holds for all rows.
        max_batch_size: most rows in one batch (default 256); also the largest
            batch of the TensorRT optimization profile.
        device_id: the GPU, for CUDA and TensorRT.
        cache_dir: where TensorRT keeps its engine and timing caches; default
            ``<bundle>.trt-cache`` next to the bundle.
        cpu_mem_arena: use ORT's CPU memory arena (default on: with batches
            bounded by ``max_batch_tokens`` its high-water mark is bounded too,
            and it held half the peak RSS of plain malloc; see session.py).
        check_numerics: at load, encode the bundle's self-check texts and compare
            them with the reference vectors it carries (PyTorch fp32 and the export
            host's); a miss raises :class:`NumericsError` (``runtime/selfcheck.py``).
            Default on: it protects a bundle copied to a new machine. A pass is cached
            per bundle, host and onnxruntime version, so only the first load on a host
            pays (8 short texts: 165-190 ms on the bert-base twin's int8 bundle, 2 cores; docs/bundle.md);
            ``"always"`` checks again whatever the cache holds.
        trusted_keys: Ed25519 public keys (paths to PEM files, or PEM bytes): the bundle's
            ``manifest.sig`` must hold a signature of its manifest by one of them, checked
            before anything else is read (``bowrt/signing.py``, the ``sign`` extra); else
            :class:`BundleUnsignedError` / :class:`BundleSignatureError`. None: no check.

    An int8 bundle runs the graph that is exact on this CPU (``runtime/host.py``: its
    u8 x s8 graph where ONNX Runtime accumulates in int32, its u8 x u8 twin, the same
    integers, where it adds products in saturating int16 pairs); a bundle with no graph
    exact here is refused with :class:`HostUnsupportedError` before anything runs.

    Unknown options raise :class:`OptionError` listing the valid ones.
    """

    def __init__(
        self,
        bundle: str | os.PathLike[str],
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
        *,
        max_batch_tokens: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_lanes: int | None = None,
        device_id: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        cpu_mem_arena: bool = True,
        check_numerics: bool | str = True,
        trusted_keys: Sequence[str | os.PathLike[str] | bytes] | None = None,
        **unknown: Any,
    ):
        if unknown:
            valid = [p for p in inspect.signature(Encoder.__init__).parameters if p not in ("self", "bundle", "unknown")]
            raise OptionError(f"unknown option(s) {', '.join(sorted(unknown))} for Encoder; valid: {', '.join(valid)}")
        self.threads = physical_cores() if threads is None else check_int("threads", threads)
        self.max_batch_size = check_int("max_batch_size", max_batch_size)
        check_int("max_batch_tokens", max_batch_tokens, optional=True)
        check_int("batch_lanes", batch_lanes, optional=True)
        device_id = check_int("device_id", device_id, 0)
        check_bool("cpu_mem_arena", cpu_mem_arena)
        if not (isinstance(check_numerics, bool) or check_numerics == "always"):
            raise OptionError(f"check_numerics must be True, False or 'always', got {check_numerics!r}")

        self.bundle_dir = hub.local_bundle(bundle)  # a missing 'org/name' is pointed to from_pretrained
        signed = None
        if trusted_keys is not None:  # the manifest's bytes once, signature checked; verify_bundle parses those
            from bowrt.signing import check_signature

            signed, _ = check_signature(self.bundle_dir, trusted_keys)
        self.manifest: Manifest = verify_bundle(self.bundle_dir, signed)
        self.graph_file = host.select_graph(self.manifest)  # HostUnsupportedError where no graph is exact
        specs = build_providers(
            providers, self.manifest, ort.get_available_providers(), self.bundle_dir, cache_dir, device_id,
            max_batch_size=self.max_batch_size,
        )
        rules = self.manifest.text
        self._tokenizers = {
            "query": TextTokenizer(self.bundle_dir / TOKENIZER_FILE, rules.query_max_length),
            "passage": TextTokenizer(self.bundle_dir / TOKENIZER_FILE, rules.passage_max_length),
        }
        self._session = Session(
            self.bundle_dir, self.manifest, specs,
            explicit=providers is not None, threads=self.threads, device_id=device_id,
            max_batch_size=self.max_batch_size, cpu_mem_arena=cpu_mem_arena, model_file=self.graph_file,
        )
        on_gpu = self._session.provider in GPU_PROVIDERS
        self.max_batch_tokens = max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS["gpu" if on_gpu else "cpu"]
        lanes = lane_count(batch_lanes, self.variant, self.provider, on_gpu, self.threads)
        self._lanes = None if lanes <= 1 else Lanes(
            # CPU only, whatever was asked: a GPU asked for and not taken left the main session on CPU.
            Session(self.bundle_dir, self.manifest, [(CPU, {})], explicit=True, threads=max(1, self.threads // lanes),
                    cpu_mem_arena=cpu_mem_arena, model_file=self.graph_file), lanes)
        self.narrow_budget: tuple[tuple[int, int], ...] = LANE_NARROW if self._lanes and not max_batch_tokens else ()
        self.numerics: dict[str, Any] | None = (
            selfcheck.cached_run(self, force=check_numerics == "always") if check_numerics else None)

    # --- what is running ------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.manifest.hidden_size

    @property
    def variant(self) -> str:
        return self.manifest.variant

    @property
    def provider(self) -> str:
        """The provider really running the graph: ``"cpu"``, ``"cuda"``, ``"tensorrt"`` (or an ORT name)."""
        return SHORT.get(self._session.provider, self._session.provider)

    @property
    def providers(self) -> list[str]:
        """ORT's own list for the session, first = preferred."""
        return list(self._session.providers)

    @property
    def batch_lanes(self) -> int:
        """Batches of one call that run side by side (1: one at a time)."""
        return self._lanes.count if self._lanes else 1

    @property
    def info(self) -> dict[str, Any]:
        """What is running, and where: bundle, variant, provider, threads, batch limits,
        the host's CPU as the int8 kernels see it, and the self-check's figures."""
        return {
            "bundle": str(self.bundle_dir),
            "variant": self.variant,
            "source_model": self.manifest.source_model,
            "dim": self.dim,
            "provider": self.provider,
            "threads": self.threads,
            "max_batch_tokens": self.max_batch_tokens,
            "max_batch_size": self.max_batch_size,
            "batch_lanes": self.batch_lanes,
            "narrow_budget": [list(t) for t in self.narrow_budget],
            "graph": self.graph_file,
            "host": host.describe(),
            "exact_isas": list(host.exact_isas(self.manifest)),
            "numerics": self.numerics,
        }

    def __repr__(self) -> str:
        return (
            f"Encoder({str(self.bundle_dir)!r}, variant={self.variant}, provider={self.provider}, "
            f"threads={self.threads}, batch_lanes={self.batch_lanes}, max_batch_tokens={self.max_batch_tokens}, "
            f"max_batch_size={self.max_batch_size})"
        )

    # --- stages (public: a caller may tokenize once and run the rows later) -------
    def validate_queries(self, texts: Any) -> list[str]:
        """Check a request's queries (cheap, no tokenizing); return the texts to tokenize."""
        return validate_queries(texts, self.manifest.text)

    def validate_passages(self, passages: Any) -> list[str]:
        """Check a request's passages; return the formatted texts to tokenize."""
        return validate_passages(passages, self.manifest.text)

    def tokenize_queries(self, texts: Any) -> Tokens:
        return tokenize(self._tokenizers["query"], "query", self.validate_queries(texts))

    def tokenize_passages(self, passages: Any) -> Tokens:
        return tokenize(self._tokenizers["passage"], "passage", self.validate_passages(passages))

    def tokenize(self, kind: Kind, items: Any, *, truncate: bool = True, truncation_direction: str = "right") -> Tokens:
        """Queries or passages -> :class:`Tokens` with this call's truncation (``tokenize.tokenize_with``);
        submit ``tokens.rows()`` to :meth:`batcher` to encode them without tokenizing again."""
        check_choice("kind", kind, KINDS)
        texts = self.validate_queries(items) if kind == "query" else self.validate_passages(items)
        return tokenize_with(self._tokenizers[kind], kind, texts, self.manifest.text, truncate=truncate,
                             direction=truncation_direction)

    def tokenize_ids(self, kind: Kind, rows: Any) -> Tokens:
        """Token arrays of this model's own vocabulary -> :class:`Tokens` (``tokenize.token_id_rows``)."""
        check_choice("kind", kind, KINDS)
        return token_id_rows(self._tokenizers[kind], kind, rows, self.manifest.text)

    def token_count(self, item: Any, kind: Kind = "passage") -> int:
        """Tokens one item becomes (special tokens included, truncation applied).

        It tokenizes the item (one Rust call, tens of microseconds for a passage);
        a caller that wants each text tokenized once keeps the :class:`Tokens` of
        ``tokenize_*`` (their ``lengths``) and runs them with :meth:`encode_tokens`,
        as :meth:`batcher` does.
        """
        check_choice("kind", kind, KINDS)
        text = self.validate_queries([item]) if kind == "query" else self.validate_passages([item])
        return len(self._tokenizers[kind].encode(text)[0])

    def plan(self, lengths: Sequence[int], max_batch_size: int | None = None) -> list[list[int]]:
        """The batches (row positions, longest first) that a call of rows of ``lengths`` runs:
        :func:`plan_batches` with this Encoder's budgets (``narrow_budget`` too) and ``max_batch_size``,
        or fewer rows where asked (never more)."""
        rows = self.max_batch_size if max_batch_size is None else min(max_batch_size, self.max_batch_size)
        return plan_batches(lengths, self.max_batch_tokens, rows, self.narrow_budget)

    def encode_tokens(self, tokens: Tokens, normalize: bool | None = None) -> np.ndarray:
        """Run already tokenized rows: ``[len(tokens), dim]`` float32 in their order."""
        return self.run_tokens(tokens, normalize).vectors

    def run_tokens(self, tokens: Tokens, normalize: bool | None = None, *, max_batch_size: int | None = None,
                   on_batch: Callable[[int, int, int], None] | None = None) -> Encoded:
        """:meth:`encode_tokens` with the call's :class:`Timings`.

        ``max_batch_size``: fewer rows per batch for this call than the Encoder's (never more).
        ``on_batch(batches_done, batches, rows_done)``: called after each batch, for a progress
        line; the call is planned once, so the hook sees the very batches that run.
        """
        norm = self._normalize_flag(normalize)
        n = len(tokens)
        if n == 0:
            return Encoded(np.zeros((0, self.dim), dtype=np.float32), Timings(tokens.tokenize_s, 0, 0, 0, 0, 0, 0, 0))
        t0 = time.perf_counter()
        plan = self.plan(tokens.lengths, max_batch_size)
        out = np.empty((n, self.dim), dtype=np.float32)
        planned = time.perf_counter() - t0
        spent, padded = run_plan(plan, tokens.ids, self._tokenizers[tokens.kind].pad_id, self._session, self._lanes,
                                 out, on_batch)
        spent["batch"] += planned
        t_prev = time.perf_counter()
        if norm:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        spent["post"] += time.perf_counter() - t_prev
        timings = Timings(tokens.tokenize_s, spent["batch"], spent["inference"], spent["post"], n, len(plan),
                          sum(tokens.lengths), padded)
        return Encoded(out, timings)

    def encode_timed(self, kind: Kind, items: Sequence[Any], normalize: bool | None = None) -> Encoded:
        """Queries or passages (``kind``) -> :class:`Encoded`: the vectors and where the call spent its time."""
        check_choice("kind", kind, KINDS)
        self._normalize_flag(normalize)  # fail before any work
        tokens = self.tokenize_queries(items) if kind == "query" else self.tokenize_passages(items)
        return self.run_tokens(tokens, normalize)

    # --- the API ---------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str], normalize: bool | None = None) -> np.ndarray:
        """Queries -> ``[len(texts), dim]`` float32, truncated at the manifest's query max length.

        ``normalize``: L2-normalize the rows (default: the manifest's ``normalize``,
        False for bowdpr, whose scores are raw dot products).
        """
        self._normalize_flag(normalize)  # fail before any work
        return self.encode_tokens(self.tokenize_queries(texts), normalize)

    def encode_passages(self, passages: Sequence[Any], normalize: bool | None = None) -> np.ndarray:
        """Passages -> ``[len(passages), dim]`` float32.

        A passage is a str, a ``(title, text)`` pair, or a dict with ``text`` and
        optional ``title``; a non-empty title is joined as ``"{title} {text}"``.
        Truncated at the manifest's passage max length.
        """
        self._normalize_flag(normalize)
        return self.encode_tokens(self.tokenize_passages(passages), normalize)

    # sentence-transformers' call shape (st_encode.py) and loading from the hub (hub.py)
    encode = st_encode.encode
    encode_query = st_encode.encode_query
    encode_document = st_encode.encode_document
    from_pretrained = classmethod(hub.from_pretrained)

    def batcher(self, kind: Kind = "query", normalize: bool | None = None, **options: Any) -> DynamicBatcher:
        """A :class:`~bowrt.runtime.batcher.DynamicBatcher` of queries or passages for many
        concurrent callers: ``submit``/``encode``/``aencode`` take the same items as
        ``encode_queries``/``encode_passages`` and give the same vectors.

        Each caller's items are validated and tokenized in the caller's thread, once (items that
        are :class:`TokenRow`, from :meth:`tokenize` or :meth:`tokenize_ids`, are queued as they are); the
        queue holds token rows, a row's cost is its token count, and the worker runs merged
        rows through :meth:`encode_tokens`. ``normalize`` as in ``encode_*`` (the bundle's
        default when None). ``options`` are the batcher's (``max_batch_size`` default
        ``min(max_batch_size, 64)``, ``max_batch_tokens`` default this Encoder's budget,
        ``max_wait_ms``, ``max_queue``, ``on_batch``, ``name``).
        """
        check_choice("kind", kind, KINDS)
        self._normalize_flag(normalize)
        tokenize = self.tokenize_queries if kind == "query" else self.tokenize_passages

        def prepare(items: list[Any]) -> list[list[int]]:
            if items and isinstance(items[0], TokenRow):  # tokenized already (Encoder.tokenize): checked, kept
                return row_ids(items, kind, self._tokenizers[kind])
            return list(tokenize(items).ids)

        def encode(rows: list[list[int]]) -> np.ndarray:
            return self.encode_tokens(Tokens(kind, tuple(rows)), normalize)

        options.setdefault("max_batch_tokens", self.max_batch_tokens)
        options.setdefault("max_batch_size", min(self.max_batch_size, 64))
        options.setdefault("name", f"{kind}-batcher")
        return DynamicBatcher(encode, prepare_fn=prepare, cost_fn=len, **options)

    def _normalize_flag(self, normalize: Any) -> bool:
        if normalize is None:
            return self.manifest.normalize
        if not isinstance(normalize, bool):
            raise OptionError(f"normalize must be True, False or None (the bundle's default), got {normalize!r}")
        return normalize
