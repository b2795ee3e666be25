"""Encode a whole corpus into sharded ``.npy`` files: streaming, resumable, nothing dropped silently.

    encode_corpus("bundles/fp32", "psgs_w100.tsv", "wiki-vectors/")
    encode_corpus(encoder, "queries.txt", "q-vectors/", CorpusSettings(kind="query", dtype="float16"))

Input, one record a line (``.gz`` files are read as such):

- **jsonl**: ``{"id": ..., "text": ..., "title": ...}`` (``title`` optional; BEIR's ``_id`` works too);
- **tsv**: ``id<TAB>text[<TAB>title]``, DPR's ``psgs_w100.tsv`` layout; a first line
  ``id<TAB>text<TAB>title`` is a header and skipped; fields may be quoted as DPR's are;
- **lines**: one text a line, its id the 1-based line number.

Output, in ``outdir``::

    embeddings-00000.npy   [n, dim] float32 (or float16), row i = ids-00000.txt line i
    ids-00000.txt          one id a line
    shard-00000.done.json  written last: the shard is complete (counts, line range, sha256)
    rejects.jsonl          {"line", "reason", "raw"} for every unusable line
    job.json               the settings; a rerun with other settings is refused
    index.json             written at the very end: bundle summary, dims, dtype, shards, totals

Memory stays bounded whatever the corpus size: the input is read one shard
(``shard_size`` records) at a time, encoded ``ENCODE_CHUNK`` texts per Encoder call
(which sorts them by length inside the call) straight into a memory-mapped
``.npy.tmp``, then renamed. A rerun skips every shard whose done marker matches
the same input lines (their sha256) and whose files are there at the recorded
sizes, so a crash costs at most the shard in progress.

Ids are not checked for uniqueness (that would need memory growing with the corpus).

The steps, a module each: :mod:`~bowrt.corpus.settings` (the job's settings, one
frozen :class:`CorpusSettings`), :mod:`~bowrt.corpus.read` (input lines to records
and rejects), :mod:`~bowrt.corpus.shards` (grouping, the resume check, writing one
shard), :mod:`~bowrt.corpus.job` (the output folder: ``job.json``, ``index.json``),
:mod:`~bowrt.corpus.progress` (the progress line),
:mod:`~bowrt.corpus.run` (the loop, and :func:`encode_corpus`).
"""

from bowrt.corpus.job import INDEX, JOB, REJECTS, CorpusJob, bundle_summary
from bowrt.corpus.read import Record, Reject, detect_format, read_corpus
from bowrt.corpus.run import CorpusResult, encode_corpus, load_corpus, local_shard_encoder, run_corpus_job
from bowrt.corpus.settings import (
    DEFAULT_SHARD_SIZE,
    DTYPES,
    ENCODE_CHUNK,
    FORMATS,
    KINDS,
    ON_ERROR,
    CorpusSettings,
    corpus_settings,
)
from bowrt.corpus.shards import ShardEncoder, ShardInput, plan_shards, shard_files

__all__ = [
    "DEFAULT_SHARD_SIZE", "DTYPES", "ENCODE_CHUNK", "FORMATS", "INDEX", "JOB", "KINDS", "ON_ERROR", "REJECTS",
    "CorpusJob", "CorpusResult", "CorpusSettings", "Record", "Reject", "ShardEncoder", "ShardInput",
    "bundle_summary", "corpus_settings", "detect_format", "encode_corpus", "load_corpus", "local_shard_encoder",
    "plan_shards", "read_corpus", "run_corpus_job", "shard_files",
]
