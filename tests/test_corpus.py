"""bowrt.corpus: the three input formats, outputs equal to direct encoding, float16,
resume after a crash, rejects, stop mode, refusing a folder that holds another job."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bowrt import Encoder
from bowrt.corpus import CorpusSettings, detect_format, encode_corpus, load_corpus, read_corpus
from bowrt.errors import CorpusError, CorpusLineError, OptionError
from bowrt.runtime import twin
from tests.tolerances import FLOAT16_STORAGE_ATOL, SAME_BUNDLE_ATOL

PASSAGES = [
    ("p1", "Aaron", 'Aaron ( or ; "Ahärôn") is a prophet, high priest, and the brother of Moses.'),
    ("p2", None, "The Berlin Wall fell in 1989."),
    ("p3", "Hamlet", "Hamlet is a tragedy written by William Shakespeare " * 20),
    ("p4", "", "An empty title means no title."),
    ("p5", "Paris", "Paris is the capital of France."),
    ("p6", "Emoji", "ÉCOLE normale supérieure 🎓"),
    ("p7", None, "short"),
]


@pytest.fixture(scope="module")
def enc(tiny_bundles) -> Encoder:
    return Encoder(tiny_bundles["fp32"], threads=1)


def _items(rows):
    return [{"title": t, "text": x} if t else x for _, t, x in rows]


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": x, "title": t}, ensure_ascii=False) + "\n" for i, t, x in rows),
                    encoding="utf-8")
    return path


def _write_tsv(path: Path, rows) -> Path:
    def q(s: str) -> str:  # DPR quotes text fields with doubled inner quotes
        return '"' + s.replace('"', '""') + '"' if '"' in s else s

    path.write_text("id\ttext\ttitle\n" + "".join(f"{i}\t{q(x)}\t{t or ''}\n" for i, t, x in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "tsv"])
def test_formats_equal_direct_encoding(enc, tmp_path, fmt):
    src = (_write_jsonl if fmt == "jsonl" else _write_tsv)(tmp_path / f"corpus.{fmt}", PASSAGES)
    r = encode_corpus(enc, src, tmp_path / "out", shard_size=3, progress=False)
    assert (r.total, r.rejects, r.shards, r.shards_written) == (7, 0, 3, 3)
    ids, vecs = load_corpus(tmp_path / "out")
    assert ids == [i for i, _, _ in PASSAGES]
    assert vecs.dtype == np.float32 and vecs.shape == (7, enc.dim)
    np.testing.assert_allclose(vecs, enc.encode_passages(_items(PASSAGES)), atol=SAME_BUNDLE_ATOL)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["input"]["format"] == fmt and index["dim"] == enc.dim and index["total"] == 7
    assert index["bundle"]["variant"] == "fp32" and index["bundle"]["pooling"] == "cls"
    assert [s["count"] for s in index["shards"]] == [3, 3, 1]
    assert [s["first_line"] for s in index["shards"]] == ([1, 4, 7] if fmt == "jsonl" else [2, 5, 8])


def test_plain_lines_and_queries(enc, tmp_path):
    texts = ["who wrote hamlet?", "capital of france", "q"]
    src = tmp_path / "queries.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    encode_corpus(enc, src, tmp_path / "out", kind="query", progress=False)
    ids, vecs = load_corpus(tmp_path / "out")
    assert ids == ["1", "2", "3"]
    np.testing.assert_allclose(vecs, enc.encode_queries(texts), atol=SAME_BUNDLE_ATOL)


def test_format_detection(tmp_path):
    (tmp_path / "a.dat").write_text('\n{"id": 1, "text": "x"}\n')
    (tmp_path / "b.dat").write_text("1\tx\n")
    (tmp_path / "c.dat").write_text("just text\n")
    assert [detect_format(tmp_path / n) for n in ("a.dat", "b.dat", "c.dat")] == ["jsonl", "tsv", "lines"]
    assert detect_format(tmp_path / "x.tsv.gz") == "tsv"


def test_gzip_input(enc, tmp_path):
    import gzip

    src = tmp_path / "c.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps({"_id": i, "text": x, "title": t}) + "\n" for i, t, x in PASSAGES[:3]))
    encode_corpus(enc, src, tmp_path / "out", progress=False)
    ids, vecs = load_corpus(tmp_path / "out")
    assert ids == ["p1", "p2", "p3"]
    np.testing.assert_allclose(vecs, enc.encode_passages(_items(PASSAGES[:3])), atol=SAME_BUNDLE_ATOL)


def test_float16_output(enc, tmp_path):
    src = _write_jsonl(tmp_path / "c.jsonl", PASSAGES)
    encode_corpus(enc, src, tmp_path / "out", dtype="float16", progress=False)
    ids, vecs = load_corpus(tmp_path / "out")
    assert vecs.dtype == np.float16
    ref = enc.encode_passages(_items(PASSAGES))
    np.testing.assert_allclose(vecs.astype(np.float32), ref, rtol=FLOAT16_STORAGE_ATOL, atol=FLOAT16_STORAGE_ATOL)
    assert json.loads((tmp_path / "out" / "index.json").read_text())["dtype"] == "float16"


def test_resume_recomputes_only_what_is_missing(enc, tmp_path):
    rows = [(f"id{i}", None, f"passage number {i} about topic {i % 3}") for i in range(10)]
    src = _write_jsonl(tmp_path / "c.jsonl", rows)
    out = tmp_path / "out"
    first = encode_corpus(enc, src, out, shard_size=3, progress=False)
    assert (first.shards, first.shards_written) == (4, 4)
    ids0, vecs0 = load_corpus(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("embeddings-*.npy")}

    # A crash while writing shard 3, after shard 2's vectors were renamed but before its marker:
    (out / "shard-00002.done.json").unlink()
    (out / "embeddings-00003.npy").unlink()
    (out / "shard-00003.done.json").unlink()
    (out / "embeddings-00003.npy.tmp").write_bytes(b"half a file")
    (out / "index.json").unlink()
    second = encode_corpus(enc, src, out, shard_size=3, progress=False)
    assert (second.shards_written, second.shards_reused, second.encoded) == (2, 2, 4)
    ids1, vecs1 = load_corpus(out)
    assert ids1 == ids0
    np.testing.assert_array_equal(vecs1, vecs0)
    assert all((out / n).stat().st_mtime_ns == mtimes[n] for n in ("embeddings-00000.npy", "embeddings-00001.npy"))
    assert not list(out.glob("*.tmp"))

    # A truncated shard file (size differs from its marker) is recomputed too.
    with open(out / "embeddings-00001.npy", "r+b") as f:
        f.truncate(100)
    third = encode_corpus(enc, src, out, shard_size=3, progress=False)
    assert (third.shards_written, third.shards_reused) == (1, 3)

    # Changing the input lines of one shard recomputes that shard only.
    rows[4] = ("id4", None, "a different passage")
    _write_jsonl(src, rows)
    fourth = encode_corpus(enc, src, out, shard_size=3, progress=False)
    assert (fourth.shards_written, fourth.shards_reused) == (1, 3)
    _, vecs4 = load_corpus(out)
    np.testing.assert_allclose(vecs4[4], enc.encode_passages(["a different passage"])[0], atol=SAME_BUNDLE_ATOL)


def test_rejects_are_reported_with_line_numbers(enc, tmp_path):
    src = tmp_path / "c.jsonl"
    lines = [
        json.dumps({"id": 1, "text": "good one"}).encode(),
        b"{not json",
        json.dumps({"id": 2}).encode(),
        json.dumps({"id": 3, "text": 42}).encode(),
        json.dumps({"id": 4, "text": "ok", "title": ["list"]}).encode(),
        b"",
        json.dumps({"id": "a\nb", "text": "newline in id"}).encode(),
        b'{"id": 5, "text": "bad \xff byte"}',
        json.dumps({"id": 6, "text": "   "}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
        json.dumps({"id": 7, "text": "good two", "title": "T"}).encode(),
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    r = encode_corpus(enc, src, tmp_path / "out", progress=False)
    assert (r.total, r.rejects) == (2, 9)
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["line"] for x in rejects] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    reasons = [x["reason"] for x in rejects]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "missing 'text'"
    assert "'text' must be a str" in reasons[2] and "'title' must be a str" in reasons[3]
    assert reasons[4] == "blank line" and "'id'" in reasons[5] and "UTF-8" in reasons[6]
    assert reasons[7] == "empty text" and "JSON object" in reasons[8]
    assert rejects[0]["raw"] == "{not json"
    ids, vecs = load_corpus(tmp_path / "out")
    assert ids == ["1", "7"]
    np.testing.assert_allclose(vecs, enc.encode_passages(["good one", {"title": "T", "text": "good two"}]), atol=SAME_BUNDLE_ATOL)
    assert json.loads((tmp_path / "out" / "index.json").read_text())["rejects"] == 9


def test_tsv_rejects_wrong_field_count(enc, tmp_path):
    src = tmp_path / "c.tsv"
    src.write_text("id\ttext\ttitle\n1\tfine\tT\n2\tone\ttwo\tthree\nlonely\n", encoding="utf-8")
    r = encode_corpus(enc, src, tmp_path / "out", progress=False)
    assert (r.total, r.rejects) == (1, 2)
    got = [json.loads(x)["line"] for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert got == [3, 4]


def test_stop_mode_names_the_line(enc, tmp_path):
    rows = [json.dumps({"id": i, "text": f"text {i}"}) for i in range(5)]
    rows.insert(4, "{broken")
    src = tmp_path / "c.jsonl"
    src.write_text("\n".join(rows) + "\n")
    with pytest.raises(CorpusLineError, match=r"c\.jsonl:5: invalid JSON") as info:
        encode_corpus(enc, src, tmp_path / "out", shard_size=2, on_error="stop", progress=False)
    assert info.value.line == 5
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("shard-*.done.json")) == ["shard-00000.done.json", "shard-00001.done.json"]
    assert not (out / "index.json").exists() and not list(out.glob("*.tmp"))


def test_other_settings_are_refused_unless_overwrite(enc, tmp_path):
    src = _write_jsonl(tmp_path / "c.jsonl", PASSAGES)
    encode_corpus(enc, src, tmp_path / "out", shard_size=3, progress=False)
    with pytest.raises(CorpusError, match="dtype, shard_size"):
        encode_corpus(enc, src, tmp_path / "out", shard_size=4, dtype="float16", progress=False)
    r = encode_corpus(enc, src, tmp_path / "out", shard_size=4, dtype="float16", overwrite=True, progress=False)
    assert (r.shards, r.shards_written) == (2, 2)
    assert sorted(p.name for p in (tmp_path / "out").glob("embeddings-*")) == ["embeddings-00000.npy", "embeddings-00001.npy"]


def test_bad_options_and_missing_input(enc, tmp_path):
    src = _write_jsonl(tmp_path / "c.jsonl", PASSAGES[:1])
    with pytest.raises(OptionError, match="dtype"):
        encode_corpus(enc, src, tmp_path / "o", dtype="int8", progress=False)
    with pytest.raises(OptionError, match="shard_size"):
        encode_corpus(enc, src, tmp_path / "o", shard_size=0, progress=False)
    with pytest.raises(OptionError, match="on_error"):
        encode_corpus(enc, src, tmp_path / "o", on_error="ignore", progress=False)
    with pytest.raises(CorpusError, match="does not exist"):
        encode_corpus(enc, tmp_path / "missing.jsonl", tmp_path / "o", progress=False)


def test_settings_are_one_checked_frozen_object(enc, tmp_path):
    s = CorpusSettings(kind="query", shard_size=2, dtype="float16", progress=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.kind = "passage"
    with pytest.raises(TypeError):
        CorpusSettings("query")  # keyword-only
    for bad, match in (({"kind": "doc"}, "kind must be one of query, passage"), ({"shard_size": True}, "shard_size"),
                       ({"fmt": "csv"}, "fmt"), ({"overwrite": "yes"}, "overwrite must be True or False")):
        with pytest.raises(OptionError, match=match):
            CorpusSettings(**bad)
    src = tmp_path / "q.txt"
    src.write_text("a\nb\nc\n", encoding="utf-8")
    r = encode_corpus(enc, src, tmp_path / "out", s)
    assert (r.total, r.shards) == (3, 2)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert (index["kind"], index["dtype"], index["shard_size"], index["input"]["format"]) == ("query", "float16", 2, "lines")
    again = encode_corpus(enc, src, tmp_path / "out", s, shard_size=2)  # keywords replace fields of the object
    assert (again.shards_written, again.shards_reused) == (0, 2)
    with pytest.raises(OptionError, match="unknown corpus option shardsize"):
        encode_corpus(enc, src, tmp_path / "out", shardsize=2)


def test_empty_corpus_and_progress_line(enc, tmp_path, capsys):
    src = tmp_path / "empty.jsonl"
    src.write_text("")
    r = encode_corpus(enc, src, tmp_path / "out", progress=True)
    assert (r.total, r.shards) == (0, 0)
    assert json.loads((tmp_path / "out" / "index.json").read_text())["shards"] == []
    assert "bowrt encode" in capsys.readouterr().err


def test_read_corpus_streams(tmp_path):
    # A generator: nothing is read before it is iterated, and lines come one at a time.
    src = tmp_path / "c.txt"
    src.write_text("a\nb\n")
    rows = read_corpus(src)
    assert next(rows).item == "a"
    os.remove(src)  # already open: the rest still streams from the open file
    assert next(rows).item == "b"


def test_progress_shows_total_rate_and_eta_and_reaches_the_total(enc, tmp_path, capsys, monkeypatch):
    import re

    from bowrt.corpus import progress

    monkeypatch.setitem(progress.EVERY_S, "log", 0.001)  # stderr is not a terminal here: periodic lines
    src = _write_tsv(tmp_path / "c.tsv", PASSAGES * 30)  # a header, 210 records
    with src.open("a", encoding="utf-8") as f:
        f.write("bad line without tabs\nx\ty")  # a reject, and a last line with no newline
    r = encode_corpus(enc, src, tmp_path / "out", shard_size=50)
    assert (r.total, r.rejects) == (211, 1)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("bowrt encode:")]
    counts = [tuple(map(int, m.groups())) for ln in lines if (m := re.search(r"(\d+)/(\d+) lines", ln))]
    assert len(counts) == len(lines) >= 2
    assert {t for _, t in counts} == {213}  # every line of the file: header, records, reject
    assert [c for c, _ in counts] == sorted(c for c, _ in counts) and counts[-1][0] == 213
    assert re.search(r"\d+\.\d texts/s, ETA \d+:\d\d:\d\d", lines[-1]) and "(100.0%)" in lines[-1]
    # Rerun: all shards reused, the count still ends at the total.
    encode_corpus(enc, src, tmp_path / "out", shard_size=50)
    assert re.search(r"213/213 lines \(100.0%\).*, 211 reused$", capsys.readouterr().err.splitlines()[-1])


def test_progress_reports_each_chunk_and_redraws_one_line_on_a_terminal(enc):
    import io

    from bowrt.corpus import local_shard_encoder
    from bowrt.corpus.progress import Progress, count_lines

    reports = []
    out = np.zeros((5, enc.dim), dtype=np.float32)
    local_shard_encoder(enc, "passage", chunk=2)(_items(PASSAGES[:5]), out, reports.append)
    assert reports == [2, 2, 1]
    np.testing.assert_allclose(out, enc.encode_passages(_items(PASSAGES[:5])), atol=SAME_BUNDLE_ATOL)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    bar = Progress(True, 10, stream=term)
    bar.texts(4)
    bar._draw()
    bar.close(finished=True)
    assert term.getvalue().startswith("\rbowrt encode: 4/10 lines (40.0%)") and term.getvalue().count("\n") == 1
    assert "\rbowrt encode: 10/10 lines (100.0%)" in term.getvalue()
    assert Progress(False).line().startswith("bowrt encode: 0 lines") and count_lines(Path("x.tsv.gz")) is None


def test_a_shard_encoder_of_the_old_two_argument_form_still_runs(enc, tmp_path, capsys, monkeypatch):
    """Third-party shard encoders written as ``encode(items, out)`` (before ``progress`` came in)
    keep working: same vectors, and the progress line still reaches the total."""
    from bowrt.corpus import progress, run_corpus_job
    from bowrt.corpus.shards import takes_progress

    monkeypatch.setitem(progress.EVERY_S, "log", 0.001)
    calls = []

    def old(items, out):  # the 0.2 form
        calls.append(len(items))
        out[:] = enc.encode_passages(list(items))

    class OldCallable:  # a callable object of the same form
        def __call__(self, items, out):
            old(items, out)

    assert not takes_progress(old) and not takes_progress(OldCallable())
    assert takes_progress(lambda items, out, progress: None) and takes_progress(lambda *a: None)
    src = _write_jsonl(tmp_path / "c.jsonl", PASSAGES)
    for k, shard_encoder in enumerate((old, OldCallable())):
        r = run_corpus_job(Path(enc.bundle_dir), enc.manifest, src, tmp_path / f"out{k}", shard_encoder,
                           CorpusSettings(shard_size=3))
        assert (r.total, r.shards_written) == (7, 3)
        ids, vecs = load_corpus(tmp_path / f"out{k}")
        np.testing.assert_allclose(vecs, enc.encode_passages(_items(PASSAGES)), atol=SAME_BUNDLE_ATOL)
        assert "7/7 lines (100.0%)" in capsys.readouterr().err
    assert calls == [3, 3, 1, 3, 3, 1]


def test_a_resumed_job_refuses_other_weights_behind_the_same_graph(tiny_bundles, tmp_path):
    """An int8 graph keeps its weights in model.onnx.data: the job pins that file's sha256 too, so a
    bundle with the same model.onnx but other weights is another job, never mixed into this one."""
    import shutil

    import onnx

    from bowrt.bundle import DATA_FILE, MANIFEST, MODEL_FILE, sha256_file

    other = Path(shutil.copytree(tiny_bundles["int8"], tmp_path / "other"))
    graph = onnx.load(str(other / MODEL_FILE), load_external_data=False)
    weight = next(t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8
                  and t.data_location == onnx.TensorProto.EXTERNAL)
    with open(other / DATA_FILE, "r+b") as f:  # one int8 weight moved by one step: still a valid graph
        f.seek(int({e.key: e.value for e in weight.external_data}["offset"]))
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 1]))
    m = json.loads((other / MANIFEST).read_text())
    m["files"][DATA_FILE] = {"sha256": sha256_file(other / DATA_FILE), "bytes": (other / DATA_FILE).stat().st_size}
    for spec in m["quantization"].get("derived", {}).values():  # as its export would: the u8 twin's sha256 moves too
        spec["sha256"], spec["bytes"] = twin.write_u8(other / spec["from"], io.BytesIO())
    (other / MANIFEST).write_text(json.dumps(m))
    src = _write_jsonl(tmp_path / "c.jsonl", PASSAGES)
    encode_corpus(Encoder(tiny_bundles["int8"], threads=1), src, tmp_path / "out", shard_size=3, progress=False)
    job = json.loads((tmp_path / "out" / "job.json").read_text())
    assert job["data_sha256"] == json.loads((tiny_bundles["int8"] / MANIFEST).read_text())["files"][DATA_FILE]["sha256"]
    with pytest.raises(CorpusError, match="data_sha256 differ"):
        encode_corpus(Encoder(other, threads=1, check_numerics=False), src, tmp_path / "out", shard_size=3, progress=False)
