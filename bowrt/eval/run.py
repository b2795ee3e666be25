"""``bowrt eval``: encode a labelled set with each bundle, search exactly, score, compare with the first bundle.

Passages are encoded with the bundle's passage rules (title + text, its max length) by
``bowrt encode``'s corpus job, into resumable shards under ``OUT/vectors/<bundle>/``: an
interrupted run resumes, and a second run on the same set reuses them. Queries are encoded
with the query rules. The search is exact (:mod:`bowrt.eval.search`), the metrics are
:mod:`bowrt.eval.metrics`'; ``OUT/eval.json``, ``OUT/eval.md`` and the plot are written by
:mod:`bowrt.eval.report`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bowrt.corpus import encode_corpus
from bowrt.corpus.progress import Progress
from bowrt.corpus.read import Record, read_corpus
from bowrt.errors import OptionError
from bowrt.eval import data as eval_data
from bowrt.eval import metrics, search
from bowrt.options import check_bool, check_choice, check_int

Log = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """``split``: BEIR's qrels split. ``depth``: passages retrieved per query (the largest k).
    ``backend``: ``"numpy"`` (exact, chunked) or ``"faiss"`` (``faiss-cpu``'s exact index).
    ``bootstrap``: resamples of the paired intervals. ``shard_size``: vectors per passage shard.
    ``progress``: progress lines on stderr."""

    split: str = "test"
    depth: int = 100
    backend: str = "numpy"
    bootstrap: int = metrics.BOOTSTRAP
    shard_size: int = 10_000
    progress: bool = True

    def __post_init__(self) -> None:
        check_int("depth", self.depth)
        check_choice("backend", self.backend, search.BACKENDS)
        check_int("bootstrap", self.bootstrap, 10)
        check_int("shard_size", self.shard_size)
        check_bool("progress", self.progress)
        if self.depth < max(metrics.RECALL_KS + metrics.DPR_KS):
            raise OptionError(f"depth must be >= {max(metrics.RECALL_KS + metrics.DPR_KS)} (the largest k reported)")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def labels(bundles: Sequence[Any]) -> list[str]:
    """A short, unique name per bundle: its folder's name, with the parent's where two share one."""
    paths = [Path(getattr(b, "bundle_dir", b)) for b in bundles]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


def shard_blocks(folder: Path) -> Iterator[np.ndarray]:
    """A finished corpus job's vectors, one memory-mapped shard at a time."""
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    for s in index["shards"]:
        yield np.load(folder / s["embeddings"], mmap_mode="r")


def encode_passages(enc: Any, evalset: eval_data.EvalSet, folder: Path, settings: EvalSettings) -> dict[str, Any]:
    """The set's passages as shards in ``folder`` (resumed or reused when there already)."""
    t0 = time.perf_counter()
    r = encode_corpus(enc, evalset.corpus, folder, shard_size=settings.shard_size, progress=settings.progress)
    if r.total != evalset.passages:  # the corpus job and the set's check read the file alike
        raise OptionError(f"{evalset.corpus}: {r.total} passages encoded, {evalset.passages} expected")
    return {"folder": str(folder), "seconds": time.perf_counter() - t0, "shards_written": r.shards_written,
            "shards_reused": r.shards_reused, "passages": r.total}


def ranked(queries: np.ndarray, folder: Path, settings: EvalSettings, total: int) -> np.ndarray:
    """Each query's top ``settings.depth`` passage rows, best first."""
    bar = Progress(settings.progress, total, label="bowrt eval: search", unit="passages")
    try:
        _, rows = search.top_k(queries, shard_blocks(folder), settings.depth, settings.backend, on_block=bar.texts)
    finally:
        bar.close(finished=True)
    return rows


def passage_tokens(path: Path, wanted: set[int]) -> dict[int, list[str]]:
    """DPR: the answer-match tokens of the passage texts at the ``wanted`` rows (one more streamed pass)."""
    from bowrt.eval.answers import tokens

    out, row = {}, 0
    for rec in read_corpus(path, kind="passage"):
        if isinstance(rec, Record):
            if row in wanted:
                out[row] = tokens(rec.item["text"] if isinstance(rec.item, dict) else rec.item)
            row += 1
    return out


def _relevant(evalset: eval_data.EvalSet) -> list[dict[int, int]]:
    return [{evalset.judged_rows[p]: s for p, s in evalset.qrels[q].items()} for q, _ in evalset.queries]


def _hits(evalset: eval_data.EvalSet, rows: np.ndarray, texts: dict[int, list[str]]) -> np.ndarray:
    """DPR: ``hits[q, i]``, whether passage i of query q's ranking holds one of its answers."""
    from bowrt.eval.answers import has_answer

    answers = evalset.answer_tokens()
    return np.array([[has_answer(answers[q], texts[r]) for r in rs] for (q, _), rs in zip(evalset.queries, rows)],
                    dtype=bool).reshape(rows.shape)


def score(evalset: eval_data.EvalSet, rows: np.ndarray, texts: dict[int, list[str]] | None = None,
          ks: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """Per-query metrics of one ranking (``rows[q]``: query q's passage rows, best first); ``ks``: the
    cutoffs (default: the reported ones). DPR's passage texts are read when ``texts`` is not given."""
    if evalset.layout == "beir":
        return metrics.beir_per_query(rows, _relevant(evalset), ks or metrics.RECALL_KS)
    texts = texts if texts is not None else passage_tokens(evalset.corpus, set(rows.ravel().tolist()))
    return metrics.dpr_per_query(_hits(evalset, rows, texts), ks or metrics.DPR_KS)


def score_all(evalset: eval_data.EvalSet, rows: np.ndarray, texts: dict[int, list[str]] | None) -> tuple[dict[str, np.ndarray], list[float]]:
    """(the reported per-query metrics, the curve): one pass over the ranking at every k = 1 .. depth gives
    both, Recall@k (BEIR) or top-k accuracy (DPR) for the plot, and the reported cutoffs among them."""
    depth = max(rows.shape[1], *metrics.RECALL_KS, *metrics.DPR_KS)  # a corpus smaller than 100 still has every k
    per = score(evalset, rows, texts, tuple(range(1, depth + 1)))
    at_k = [name for name in per if name.startswith(("recall@", "top"))]
    reported = {f"recall@{k}" for k in metrics.RECALL_KS} | {f"top{k}" for k in metrics.DPR_KS} | {"mrr@10", "ndcg@10"}
    order = [f"recall@{k}" for k in metrics.RECALL_KS] + ["mrr@10", "ndcg@10"] + [f"top{k}" for k in metrics.DPR_KS]
    return {m: per[m] for m in order if m in per and m in reported}, [float(per[m].mean()) for m in at_k]


def _one_bundle(bundle: Any, name: str, evalset: eval_data.EvalSet, out: Path, settings: EvalSettings,
                encoder_options: dict[str, Any], log: Log) -> dict[str, Any]:
    from bowrt.runtime import Encoder

    enc = bundle if isinstance(bundle, Encoder) else Encoder(bundle, **encoder_options)
    key = _manifest_sha(enc)  # the bundle's identity: another bundle never reuses these vectors
    log(f"{name}: encoding {evalset.passages} passages ({enc.variant}, graph {enc.graph_file}) ...")
    encoded = encode_passages(enc, evalset, out / "vectors" / f"{name.replace('/', '_')}-{key[:12]}", settings)
    t0 = time.perf_counter()
    q = enc.encode_queries([t for _, t in evalset.queries])
    query_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = ranked(q, Path(encoded["folder"]), settings, evalset.passages)
    return {"bundle": str(enc.bundle_dir), "variant": enc.variant, "graph": enc.graph_file,
            "rows": rows, "encode": encoded, "query_s": query_s, "search_s": time.perf_counter() - t0}


def _manifest_sha(enc: Any) -> str:
    import hashlib

    return hashlib.sha256((Path(enc.bundle_dir) / "manifest.json").read_bytes()).hexdigest()


def compare(evalset: eval_data.EvalSet, runs: dict[str, dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Every bundle after the first against the first: top-k overlap, paired bootstrap intervals, changed queries."""
    names = list(runs)
    base = runs[names[0]]
    qids = [q for q, _ in evalset.queries]
    hit_metric = "recall@20" if evalset.layout == "beir" else "top20"
    out = {}
    for n in names[1:]:
        r = runs[n]
        out[n] = {"against": names[0],
                  "overlap@10": metrics.overlap(base["rows"], r["rows"], 10),
                  "overlap@100": metrics.overlap(base["rows"], r["rows"], 100),
                  "metrics": {m: metrics.bootstrap_diff(base["per_query"][m], r["per_query"][m], rounds)
                              for m in base["per_query"]},
                  "changed": {"metric": hit_metric, **metrics.changed(base["per_query"][hit_metric],
                                                                      r["per_query"][hit_metric], qids)}}
    return out


def evaluate(bundles: Sequence[Any], data: str | Path, out: str | Path, settings: EvalSettings | None = None, *,
             passages: str | Path | None = None, questions: str | Path | None = None,
             providers: Any = None, threads: int | None = None, log: Log = _stderr) -> dict[str, Any]:
    """Evaluate ``bundles`` (folders or loaded Encoders) on the labelled set ``data``; write the report
    into ``out`` and return it (``eval.json``'s content). DPR's two files may be given as
    ``passages`` and ``questions`` instead of a folder."""
    from bowrt.eval.report import write

    settings = settings or EvalSettings()
    if not bundles:
        raise OptionError("bowrt eval needs at least one bundle")
    out = Path(out)
    t0 = time.perf_counter()
    evalset = eval_data.load(data, split=settings.split, passages=passages, questions=questions)
    log(f"{evalset.layout} set: {len(evalset.queries)} queries, {evalset.passages} passages"
        + "".join(f"; skipped {n} {why}" for why, n in evalset.skipped.items()))
    runs = {}
    for name, bundle in zip(labels(bundles), bundles):
        runs[name] = _one_bundle(bundle, name, evalset, out, settings, {"providers": providers, "threads": threads}, log)
    texts = None
    if evalset.layout == "dpr":
        texts = passage_tokens(evalset.corpus, {int(x) for r in runs.values() for x in r["rows"].ravel()})
    for r in runs.values():
        r["per_query"], r["curve"] = score_all(evalset, r["rows"], texts)
        r["metrics"] = metrics.means(r["per_query"])
    comparisons = compare(evalset, runs, settings.bootstrap)
    for r in runs.values():  # per query, in the order of set.query_ids: for the user's own statistics
        r["per_query"] = {m: [round(float(x), 6) for x in v] for m, v in r["per_query"].items()}
    result = {"set": {**_describe(evalset, data, passages, questions), "query_ids": [q for q, _ in evalset.queries]},
              "settings": settings.__dict__,
              "bundles": {n: {k: v for k, v in r.items() if k != "rows"} for n, r in runs.items()},
              "comparisons": comparisons, "seconds": time.perf_counter() - t0}
    write(result, out)
    return result


def _describe(evalset: eval_data.EvalSet, data: Any, passages: Any, questions: Any) -> dict[str, Any]:
    from bowrt.runtime import host

    return {"layout": evalset.layout, "path": str(data), "corpus": str(evalset.corpus), "queries": len(evalset.queries),
            "passages": evalset.passages, "skipped": dict(evalset.skipped), "host": host.summary(),
            **({"passages_file": str(passages), "questions_file": str(questions)} if passages else {})}
