"""The corpus job of :mod:`bowrt.corpus` on a Ray cluster (the ``scale`` extra: ``ray[data]``).

    encode_corpus_ray("bundles/fp32", "psgs_w100.tsv", "wiki-vectors/", address="auto")

Same input formats, same output folder (shards, done markers, rejects, index),
same resume rule: the reading, sharding and writing are :mod:`bowrt.corpus`'s;
only "encode this shard" differs. Each pending shard becomes a Ray Dataset whose
``map_batches`` runs :class:`EncoderActor` on a pool of actors (one per
``threads_per_actor`` CPUs, or one per GPU with ``num_gpus=1`` each); the rows
come back tagged with their position and land in the shard's memory-mapped
``.npy`` on the driver. The bundle path must be readable on every node (a
shared filesystem, or the same path everywhere).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bowrt.bundle import verify_bundle
from bowrt.corpus import CorpusResult, CorpusSettings, corpus_settings, run_corpus_job
from bowrt.options import check_int

DEFAULT_BATCH_SIZE = 1024  # rows per actor call; the Encoder plans its own token-budget batches inside


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError("encoding on Ray needs ray[data]: pip install 'bowrt[scale]' (or 'ray[data]')") from e
    return ray


class EncoderActor:
    """One Encoder per Ray actor, loaded once; called on batches ``{"row", "text", "title"}``."""

    def __init__(self, bundle: str, kind: str, providers: Any = None, threads: int | None = None):
        from bowrt.runtime import Encoder

        self.encoder = Encoder(bundle, providers, threads)
        self.kind = kind

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        if self.kind == "query":
            vecs = self.encoder.encode_queries(texts)
        else:
            titles = batch.get("title")
            items = [{"title": ti, "text": t} if isinstance(ti, str) and ti else t
                     for t, ti in zip(texts, titles if titles is not None else [None] * len(texts))]
            vecs = self.encoder.encode_passages(items)
        return {"row": np.asarray(batch["row"], dtype=np.int64), "embedding": vecs}


def ray_shard_encoder(bundle: str, kind: str, *, num_actors: int, num_gpus: float = 0.0, threads_per_actor: int = 1,
                      providers: Any = None, batch_size: int = DEFAULT_BATCH_SIZE):
    """A :data:`bowrt.corpus.ShardEncoder` that runs one Ray Data job per shard."""
    ray = _ray()

    def encode(items: Sequence[Any], out: np.ndarray, progress: Callable[[int], None]) -> None:
        rows = [
            {"row": i, "text": it["text"], "title": it["title"]} if isinstance(it, dict) else {"row": i, "text": it, "title": None}
            for i, it in enumerate(items)
        ]
        blocks = max(1, min(4 * num_actors, -(-len(rows) // batch_size)))  # every actor gets work, no tiny blocks
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        ds = ds.map_batches(
            EncoderActor,
            fn_constructor_kwargs={"bundle": bundle, "kind": kind, "providers": providers, "threads": threads_per_actor},
            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=min(num_actors, blocks)),
            num_cpus=threads_per_actor, num_gpus=num_gpus or None,
        )
        filled = 0
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            out[batch["row"]] = batch["embedding"]
            filled += len(batch["row"])
            progress(len(batch["row"]))
        if filled != len(items):
            raise RuntimeError(f"Ray returned {filled} vectors for a shard of {len(items)} texts")

    return encode


def encode_corpus_ray(bundle: str | os.PathLike[str], input: str | os.PathLike[str], outdir: str | os.PathLike[str],
                      settings: CorpusSettings | None = None, *, address: str | None = None,
                      num_actors: int | None = None, use_gpu: bool = False, threads_per_actor: int = 1,
                      providers: Any = None, batch_size: int = DEFAULT_BATCH_SIZE, **options: Any) -> CorpusResult:
    """:func:`bowrt.corpus.encode_corpus`, with the encoding spread over a Ray cluster.

    ``settings`` and ``options`` as there (a :class:`~bowrt.corpus.CorpusSettings`,
    fields replaced by keyword). ``address``: a running cluster (``"auto"``,
    ``"ray://host:10001"``); None starts or joins a local one (an already
    initialized Ray is used as is). ``num_actors``: default one per
    ``threads_per_actor`` CPUs of the cluster, or one per GPU with ``use_gpu``
    (each actor then gets ``num_gpus=1`` and the CUDA provider unless
    ``providers`` says otherwise).
    """
    settings = corpus_settings(settings, **options)
    check_int("threads_per_actor", threads_per_actor)
    check_int("batch_size", batch_size)
    bundle_dir = Path(bundle).resolve()
    manifest = verify_bundle(bundle_dir)  # fail here, not in every actor
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True)
    resources = ray.cluster_resources()
    if num_actors is None:
        num_actors = int(resources.get("GPU", 0)) if use_gpu else int(resources.get("CPU", 1) // threads_per_actor)
    check_int(f"num_actors (the cluster has {resources})", num_actors)
    if use_gpu and providers is None:
        providers = "cuda"
    encode = ray_shard_encoder(str(bundle_dir), settings.kind, num_actors=num_actors, num_gpus=1.0 if use_gpu else 0.0,
                               threads_per_actor=threads_per_actor, providers=providers, batch_size=batch_size)
    return run_corpus_job(bundle_dir, manifest, input, outdir, encode, settings)
