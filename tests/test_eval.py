"""bowrt eval: metrics known by hand, DPR's answer match, both layouts read and checked line by line,
exact search (numpy and FAISS agree), a labelled set built here from the standard library, bowrt fp32
against PyTorch fp32, resume after a kill, and the export's retrieval gate."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from bowrt.errors import EvalDataError, ExportOptionError, OptionError, ParityGateError
from bowrt.eval import EvalSettings, evaluate, load, metrics, search
from bowrt.eval.answers import has_answer, tokens
from bowrt.eval.run import score
from tests.eval_sets import stdlib_pairs, write_beir

QUIET = EvalSettings(progress=False, bootstrap=200)


# --- metrics and the answer match, by hand ------------------------------------------------------
def test_beir_metrics_known_by_hand():
    ranked = np.array([[1, 0, 2, 3, 4], [2, 9, 3, 5, 6]])
    relevant = [{0: 1}, {2: 2, 3: 1, 7: 0}]  # query 2: graded, and one judged non-relevant passage
    m = metrics.beir_per_query(ranked, relevant, ks=(1, 5))
    assert m["recall@1"].tolist() == [0.0, 0.5] and m["recall@5"].tolist() == [1.0, 1.0]
    assert m["mrr@10"].tolist() == [0.5, 1.0]
    # q1: 1/log2(3) over 1; q2: (2 + 1/log2(4)) over (2 + 1/log2(3))
    assert m["ndcg@10"] == pytest.approx([1 / np.log2(3), 2.5 / (2 + 1 / np.log2(3))])
    assert metrics.means(m)["mrr@10"] == pytest.approx(0.75)


def test_dpr_accuracy_overlap_bootstrap_and_changed_queries_by_hand():
    hits = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    acc = metrics.dpr_per_query(hits, ks=(1, 3))
    assert acc["top1"].tolist() == [0, 1, 0] and acc["top3"].tolist() == [1, 1, 0]
    assert metrics.overlap(np.array([[1, 2], [3, 4]]), np.array([[2, 1], [3, 9]]), 2) == 0.75
    same = metrics.bootstrap_diff(np.ones(50), np.ones(50))
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0}
    worse = metrics.bootstrap_diff(np.ones(100), np.r_[np.zeros(30), np.ones(70)])
    assert worse["diff"] == pytest.approx(-0.3) and worse["low"] < -0.3 < worse["high"] < 0
    assert metrics.changed(np.array([1, 1, 0]), np.array([1, 0, 1]), ["a", "b", "c"]) == {"lost": ["b"], "gained": ["c"]}


def test_answer_match_is_dprs_tokenizer_exactly():
    """The scan over unicodedata against DPR's own regular expression (the regex module, \\p classes)."""
    regex = pytest.importorskip("regex")
    dpr = regex.compile(r"([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}])", flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE)
    rng = np.random.default_rng(0)
    pool = list("aZé9_-'\",.;:!?()[] \t\n\u00a0\u200b\u0301\u3000日本語Ωß") + ["\U0001f600", "\x07", "½", "Ⅻ"]
    texts = ["".join(rng.choice(pool, size=int(n))) for n in rng.integers(0, 40, 300)]
    texts += [body for _, _, body in stdlib_pairs()[0][:50]]
    for t in texts:
        want = [m.group().lower() for m in dpr.finditer(unicodedata.normalize("NFD", t))]
        assert tokens(t) == want, repr(t)
    assert has_answer([tokens("Prince of Denmark")], tokens("Hamlet, the PRINCE of Denmark."))
    assert not has_answer([tokens("prince of")], tokens("the princes of Denmark"))
    assert has_answer([tokens("Café")], tokens("un cafe\u0301 noir"))  # NFD: one and the same token


# --- the two layouts, and bad input named by file and line -----------------------------------------
def _beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries), encoding="utf-8")
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels, encoding="utf-8")
    return folder


CORPUS = [{"_id": "p1", "title": "Hamlet", "text": "A tragedy by Shakespeare."}, {"_id": "p2", "text": "Paris is in France."},
          {"_id": "p3", "text": "   "}, {"_id": "p4", "text": "The Nile flows north."}]
QUERIES = [{"_id": "q1", "text": "who wrote hamlet?"}, {"_id": "q2", "text": "where is paris?"},
           {"_id": "q3", "text": "not judged"}, {"_id": "q4", "text": "judged, nothing relevant"}]


def test_beir_set_is_read_and_what_cannot_be_evaluated_is_counted(tmp_path):
    s = load(_beir(tmp_path / "b", CORPUS, QUERIES, "q1\tp1\t1\nq2\tp2\t2\nq2\tp4\t0\nq4\tp4\t0\n"))
    assert [q for q, _ in s.queries] == ["q1", "q2"] and s.passages == 3
    assert s.qrels == {"q1": {"p1": 1}, "q2": {"p2": 2, "p4": 0}} and s.judged_rows == {"p1": 0, "p2": 1, "p4": 2}
    assert s.skipped == {"passages with empty text": 1, "queries with no judgement in qrels": 1,
                         "queries whose judgements are all 0 (nothing relevant)": 1}
    got = score(s, np.array([[0, 1, 2], [2, 0, 1]]))
    assert got["recall@1"].tolist() == [1.0, 0.0] and got["mrr@10"].tolist() == [1.0, 1 / 3]


@pytest.mark.parametrize(("corpus", "queries", "qrels", "where", "what"), [
    (CORPUS + [{"title": "x", "text": "no id"}], QUERIES, "q1\tp1\t1\n", "corpus.jsonl:5", "missing 'id'"),
    (CORPUS + [{"_id": "p1", "text": "again"}], QUERIES, "q1\tp1\t1\n", "corpus.jsonl:5", "duplicate passage id 'p1' (first on line 1)"),
    (CORPUS, QUERIES + [{"_id": "q1", "text": "x"}], "q1\tp1\t1\n", "queries.jsonl:5", "duplicate id 'q1'"),
    (CORPUS, QUERIES, "", "qrels.tsv", "empty qrels"),
    (CORPUS, QUERIES, "q1\tp1\t1\nq1\tp9\t1\n", "qrels.tsv:3", "passage 'p9' is not in corpus.jsonl"),
    (CORPUS, QUERIES, "q1\tp3\t1\n", "qrels.tsv:2", "passage 'p3' is not in corpus.jsonl (or its text is empty)"),
    (CORPUS, QUERIES, "q1\tp1\t1\nq7\tp1\t1\n", "qrels.tsv:3", "query 'q7' is not in queries.jsonl"),
    (CORPUS, QUERIES, "q1\tp1\tyes\n", "qrels.tsv:2", "score 'yes' is not an integer"),
    (CORPUS, QUERIES, "q1 p1 1\n", "qrels.tsv:2", "expected 'query-id<TAB>corpus-id<TAB>score'"),
    (CORPUS, QUERIES, "q1\tp1\t1\nq1\tp1\t2\n", "qrels.tsv:3", "a second judgement of passage 'p1'"),
    (CORPUS, QUERIES, "q4\tp4\t0\n", "qrels.tsv", "no query of queries.jsonl has a relevant passage"),
])
def test_bad_beir_input_names_the_file_and_line(tmp_path, corpus, queries, qrels, where, what):
    with pytest.raises(EvalDataError) as e:
        load(_beir(tmp_path / "b", corpus, queries, qrels))
    assert where in str(e.value) and what in str(e.value), str(e.value)


def _dpr(folder: Path, questions: str, suffix: str = ".qa.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "passages.tsv").write_text(
        "id\ttext\ttitle\n1\tHamlet is a tragedy by William Shakespeare.\tHamlet\n2\t\"The Nile, \"\"the river\"\"\"\tNile\n"
        "3\tParis is the capital of France.\tParis\n", encoding="utf-8")
    (folder / f"questions{suffix}").write_text(questions, encoding="utf-8")
    return folder


def test_dpr_set_reads_dprs_qa_csv_and_jsonl(tmp_path):
    s = load(_dpr(tmp_path / "a", "who wrote hamlet?\t['William Shakespeare', 'Shakespeare']\nwhat river?\t[\"the river\"]\n"
                  "no answer?\t[]\n"))
    assert s.layout == "dpr" and s.passages == 3 and [q for q, _ in s.queries] == ["1", "2"]
    assert s.answers == {"1": ["William Shakespeare", "Shakespeare"], "2": ["the river"]}
    assert s.skipped == {"questions with no answer string": 1}
    got = score(s, np.array([[2, 0, 1], [0, 2, 1]]))  # rows: 0 Hamlet, 1 Nile, 2 Paris
    assert got["top5"].tolist() == [1.0, 1.0] and got["top20"].tolist() == [1.0, 1.0]
    assert metrics.dpr_per_query(np.array([[False, True, False]]), ks=(1, 2))["top1"].tolist() == [0.0]
    j = load(_dpr(tmp_path / "b", '{"id": "x", "question": "who wrote hamlet?", "answers": ["Shakespeare"]}\n', ".jsonl"))
    assert j.queries == [("x", "who wrote hamlet?")] and j.answers == {"x": ["Shakespeare"]}


@pytest.mark.parametrize(("questions", "suffix", "where", "what"), [
    ("who?\t'Shakespeare'\n", ".qa.csv", "questions.qa.csv:1", "must be a list of strings"),
    ("who?\t[1, 2]\n", ".qa.csv", "questions.qa.csv:1", "must be a list of strings"),
    ("who?\n", ".qa.csv", "questions.qa.csv:1", "expected 'question<TAB>[answers]'"),
    ("ok\t['a']\nwho?\t[oops\n", ".qa.csv", "questions.qa.csv:2", "are not a list"),
    ('{"question": "q", "answers": "a"}\n', ".jsonl", "questions.jsonl:1", "must be a list of strings"),
    ('{"id": 1, "question": "q", "answers": ["a"]}\n{"id": 1, "question": "r", "answers": ["b"]}\n', ".jsonl",
     "questions.jsonl:2", "duplicate question id '1'"),
    ("{broken\n", ".jsonl", "questions.jsonl:1", "invalid JSON"),
])
def test_bad_dpr_input_names_the_file_and_line(tmp_path, questions, suffix, where, what):
    with pytest.raises(EvalDataError) as e:
        load(_dpr(tmp_path / "d", questions, suffix))
    assert where in str(e.value) and what in str(e.value), str(e.value)


def test_a_folder_that_is_no_set_and_bad_settings_are_refused(tmp_path):
    with pytest.raises(EvalDataError, match="no labelled set found"):
        load(tmp_path)
    with pytest.raises(EvalDataError, match="--data DIR"):
        load(None)
    with pytest.raises(OptionError, match="depth must be >= 100"):
        EvalSettings(depth=20)
    with pytest.raises(OptionError, match="backend must be one of numpy, faiss"):
        EvalSettings(backend="annoy")


# --- exact search ------------------------------------------------------------------------------
def test_exact_search_in_chunks_equals_the_full_product_and_faiss():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((3000, 32)).astype(np.float32)
    q = rng.standard_normal((70, 32)).astype(np.float32)
    full = q @ p.T
    want = np.argsort(-full, axis=1, kind="stable")[:, :100]
    blocks = [p[:700], p[700:2100], p[2100:]]
    for max_scores in (1 << 24, 5000, 1):  # one chunk, many, a row at a time: the same ranking
        s, rows = search.top_k_numpy(q, blocks, 100, max_scores=max_scores)
        assert np.array_equal(rows, want) and np.allclose(s, np.take_along_axis(full, want, 1), atol=1e-5)
    pytest.importorskip("faiss")
    _, frows = search.top_k(q, iter(blocks), 100, "faiss")
    assert np.array_equal(frows, want)
    tie = np.ones((5, 4), np.float32)  # every score equal: the lower row first, in both backends
    assert search.top_k(np.ones((1, 4), np.float32), [tie], 3)[1].tolist() == [[0, 1, 2]]
    assert search.top_k(np.ones((1, 4), np.float32), [tie], 3, "faiss")[1].tolist() == [[0, 1, 2]]


# --- end to end on a set built from the standard library ---------------------------------------------
@pytest.fixture(scope="module")
def stdlib_set(tmp_path_factory) -> Path:
    return write_beir(tmp_path_factory.mktemp("stdlib") / "beir")


def test_stdlib_set_fp32_and_int8_with_intervals_and_faiss_agrees(minilm_bundles, stdlib_set, tmp_path):
    t0 = time.perf_counter()
    res = evaluate([minilm_bundles["fp32"], minilm_bundles["int8"]], stdlib_set, tmp_path / "out", QUIET)
    assert time.perf_counter() - t0 < 60  # the set runs in under a minute on 2 cores (about 10 s measured)
    fp32 = res["bundles"]["fp32"]["metrics"]
    assert set(fp32) == {"recall@1", "recall@5", "recall@20", "recall@100", "mrr@10", "ndcg@10"}
    assert 0.3 < fp32["recall@1"] <= fp32["recall@5"] <= fp32["recall@20"] <= fp32["recall@100"] <= 1.0
    c = res["comparisons"]["int8"]
    for m, d in c["metrics"].items():
        assert d["low"] <= d["diff"] <= d["high"]
        assert d["diff"] == pytest.approx(res["bundles"]["int8"]["metrics"][m] - fp32[m])
    assert 0.8 < c["overlap@10"] <= 1.0 and set(c["changed"]) == {"metric", "lost", "gained"}
    curve = res["bundles"]["fp32"]["curve"]
    assert len(curve) == 100 and curve == sorted(curve) and curve[19] == pytest.approx(fp32["recall@20"])
    out = tmp_path / "out"
    assert json.loads((out / "eval.json").read_text())["set"]["queries"] == res["set"]["queries"] > 100
    md = (out / "eval.md").read_text()
    assert "| int8 − fp32 |" in md and "| fp32 | fp32 |" in md
    assert (out / "recall.png").read_bytes()[:4] == b"\x89PNG"
    pytest.importorskip("faiss")
    again = evaluate([minilm_bundles["fp32"]], stdlib_set, out, EvalSettings(progress=False, backend="faiss"))
    assert again["bundles"]["fp32"]["metrics"] == fp32  # the same vectors (reused), the same ranking
    assert again["bundles"]["fp32"]["encode"]["shards_written"] == 0


def test_bowrt_fp32_gives_the_metrics_of_pytorch_fp32(minilm_dir, minilm_bundles, stdlib_set, tmp_path):
    from tests.reference import torch_reference

    res = evaluate([minilm_bundles["fp32"]], stdlib_set, tmp_path / "out", QUIET)
    s = load(stdlib_set)
    rows = [json.loads(line) for line in (stdlib_set / "corpus.jsonl").read_text().splitlines()]
    passages = [f"{r['title']} {r['text']}" if r.get("title") else r["text"] for r in rows]

    def unit(v: np.ndarray) -> np.ndarray:  # MiniLM's bundle normalizes (its sentence-transformers folder says so)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    p = unit(torch_reference(minilm_dir, passages, 256, pooling="mean"))
    q = unit(torch_reference(minilm_dir, [t for _, t in s.queries], 32, pooling="mean"))
    _, ranking = search.top_k(q, [p], 100)
    assert metrics.means(score(s, ranking)) == res["bundles"]["fp32"]["metrics"]


def test_an_interrupted_eval_resumes_from_its_shards(minilm_bundles, stdlib_set, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bowrt.cli", "eval", str(minilm_bundles["fp32"]), "--data", str(stdlib_set), "-o", str(out),
           "--shard-size", "5", "--no-progress", "--bootstrap", "100"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("vectors/*/shard-00002.done.json")):
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    vectors = next(out.glob("vectors/*"))
    assert not (vectors / "index.json").exists(), "the run finished before it could be killed"
    done = len(list(vectors.glob("shard-*.done.json")))
    assert done >= 3
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    res = json.loads((out / "eval.json").read_text())
    assert res["bundles"]["fp32"]["encode"]["shards_reused"] >= done and "recall@20" in rerun.stdout
    whole = evaluate([minilm_bundles["fp32"]], stdlib_set, tmp_path / "whole", EvalSettings(progress=False, bootstrap=100))
    assert res["bundles"]["fp32"]["metrics"] == whole["bundles"]["fp32"]["metrics"]


def test_cli_eval_errors_are_one_line(tmp_path, capsys):
    from bowrt.cli import main

    assert main(["eval", str(tmp_path), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bowrt: error: no labelled set") and err.count("\n") == 1


# --- the export's retrieval gate ---------------------------------------------------------------------
def test_export_gate_options_are_checked_before_the_model_loads(tmp_path):
    from bowrt.export import export_model

    with pytest.raises(ExportOptionError, match="export both"):
        export_model("no/such-model", tmp_path / "o", ("int8",), eval_data=tmp_path, log=lambda m: None)
    with pytest.raises(ExportOptionError, match="--eval-max-drop"):
        export_model("no/such-model", tmp_path / "o", ("fp32", "int8"), eval_data=tmp_path, eval_max_drop=-1,
                     log=lambda m: None)


def test_export_gate_refuses_int8_and_keeps_the_rest(tiny_model_dir, tmp_path, monkeypatch):
    """The gate on a real export of the tiny model: with a bound nothing can miss the int8 bundle is
    written; with a verdict that fails, int8 is not written, fp32 is, and the error says why."""
    from bowrt.bundle import verify_bundle
    from bowrt.export import eval_gate, export_model
    from tests.models import RANDOM_WEIGHT_GATES

    data = write_beir(tmp_path / "set", max_queries=30)
    lines: list[str] = []
    export_model(str(tiny_model_dir), tmp_path / "ok", ("fp32", "int8"), gates=RANDOM_WEIGHT_GATES, eval_data=data,
                 eval_max_drop=100, log=lines.append)
    assert verify_bundle(tmp_path / "ok" / "int8").variant == "int8" and (tmp_path / "ok" / "eval" / "eval.md").is_file()
    assert any("recall@20" in ln and "PASS" in ln for ln in lines)
    real = eval_gate.run

    def failing(*args, **kwargs):
        return {**real(*args, **kwargs), "passed": False, "drop_points": 3.0}

    monkeypatch.setattr(eval_gate, "run", failing)
    with pytest.raises(ParityGateError, match="int8 refused by the retrieval gate: recall@20"):
        export_model(str(tiny_model_dir), tmp_path / "no", ("fp32", "int8"), gates=RANDOM_WEIGHT_GATES,
                     eval_data=data, log=lambda m: None)
    assert verify_bundle(tmp_path / "no" / "fp32").variant == "fp32" and not (tmp_path / "no" / "int8").exists()


def test_cli_eval_max_drop_default_is_the_gates():
    from bowrt.cli import build_parser
    from bowrt.export.eval_gate import DEFAULT_MAX_DROP

    args = build_parser().parse_args(["export", "-o", "x"])
    assert args.eval_max_drop == DEFAULT_MAX_DROP and args.eval is None
