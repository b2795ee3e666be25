"""A labelled set for ``bowrt eval``, read and checked: BEIR's layout or DPR's.

- **BEIR**: a folder with ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
  (``_id``, ``text``) and ``qrels/<split>.tsv`` or ``qrels.tsv`` (``query-id corpus-id score``,
  tab-separated, a header line allowed). A passage is relevant when its score is > 0; scores
  are the graded gains of nDCG.
- **DPR**: a passage TSV (``id text title``, DPR's ``psgs_w100.tsv``; a header line allowed)
  and questions with their answer strings: DPR's ``*.qa.csv`` / ``.tsv`` (``question<TAB>
  ["answer", ...]``) or JSONL (``{"question": ..., "answers": [...]}``, an ``id`` optional).
  A folder holding ``passages.tsv`` (or ``psgs_w100.tsv``) and one questions file is found
  by itself.

Malformed input is an :class:`~bowrt.errors.EvalDataError` that names the file and the
line: a record without an id, a duplicate id, a line that does not parse, empty qrels, a
judgement that names an unknown query or passage, an answer list that is not a list of
strings. What is well formed but cannot be evaluated is skipped and counted, by reason, in
:attr:`EvalSet.skipped` (and the report): a passage with empty text, a query with no
judgement, a query whose judgements are all 0, a question with no answer string.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bowrt.corpus.read import Record, Reject, read_corpus
from bowrt.errors import EvalDataError
from bowrt.eval.answers import tokens

LAYOUTS = ("beir", "dpr")
PASSAGE_FILES = ("passages.tsv", "psgs_w100.tsv", "passages.tsv.gz", "psgs_w100.tsv.gz")
QUESTION_GLOBS = ("questions.jsonl", "questions.tsv", "*.qa.csv", "*.qa.tsv")


@dataclass
class EvalSet:
    """What the evaluation needs: the corpus file, the judged queries, and their judgements."""

    layout: str
    corpus: Path
    queries: list[tuple[str, str]]  # (query id, text), in file order: the queries that are evaluated
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # BEIR: query id -> {passage id: score}
    answers: dict[str, list[str]] = field(default_factory=dict)  # DPR: query id -> answer strings
    passages: int = 0  # passages that are searched (the corpus's usable records)
    judged_rows: dict[str, int] = field(default_factory=dict)  # BEIR: judged passage id -> its row
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def answer_tokens(self) -> dict[str, list[list[str]]]:
        return {q: [tokens(a) for a in answers] for q, answers in self.answers.items()}


def load(path: str | Path | None, *, split: str = "test", passages: str | Path | None = None,
         questions: str | Path | None = None) -> EvalSet:
    """The set at ``path`` (a BEIR folder, a DPR folder), or DPR's two files given by name."""
    if passages is not None or questions is not None:
        if passages is None or questions is None:
            raise EvalDataError("a DPR set needs both its passage TSV and its questions file")
        return load_dpr(Path(passages), Path(questions))
    if path is None:
        raise EvalDataError("no labelled set: give its folder (--data DIR), or DPR's --passages and --questions")
    folder = Path(path)
    if not folder.is_dir():
        raise EvalDataError(f"{str(folder)!r} is not a folder (a BEIR or DPR set)")
    if (folder / "corpus.jsonl").is_file() and (folder / "queries.jsonl").is_file():
        return load_beir(folder, split)
    found = [folder / n for n in PASSAGE_FILES if (folder / n).is_file()]
    qs = sorted({p for g in QUESTION_GLOBS for p in folder.glob(g)})
    if found and len(qs) == 1:
        return load_dpr(found[0], qs[0])
    raise EvalDataError(
        f"{folder}: no labelled set found: BEIR wants corpus.jsonl, queries.jsonl and qrels/{split}.tsv; DPR wants "
        f"{' or '.join(PASSAGE_FILES[:2])} and one questions file ({', '.join(QUESTION_GLOBS)}; found {len(qs)})")


def _records(path: Path, kind: str, skipped: Counter, what: str) -> list[Record]:
    """Every record of a corpus-format file; a malformed line is an error, an empty text a counted skip."""
    out = []
    for row in read_corpus(path, kind=kind):
        if isinstance(row, Reject):
            if row.reason == "empty text":
                skipped[f"{what} with empty text"] += 1
                continue
            raise EvalDataError(f"{path}:{row.line}: {row.reason}")
        out.append(row)
    return out


def _id_hash(rid: str) -> int:
    return int.from_bytes(hashlib.blake2b(rid.encode(), digest_size=8).digest(), "little")


def scan_corpus(path: Path, skipped: Counter, wanted: set[str] = frozenset()) -> tuple[int, dict[str, int]]:
    """One streamed pass over the corpus: (usable passages, {id: row} for the ``wanted`` ids). Ids are
    checked unique with 8 bytes an id (a hash), so a corpus of millions of passages fits in memory."""
    hashes, rows, n = array("Q"), {}, 0
    for row in read_corpus(path, kind="passage"):
        if isinstance(row, Reject):
            if row.reason != "empty text":
                raise EvalDataError(f"{path}:{row.line}: {row.reason}")
            skipped["passages with empty text"] += 1
            continue
        hashes.append(_id_hash(row.id))
        if row.id in wanted:
            rows[row.id] = n
        n += 1
    _check_unique(path, hashes)
    return n, rows


def _check_unique(path: Path, hashes: array) -> None:
    if len(set(hashes)) == len(hashes):
        return
    seen: dict[str, int] = {}
    for row in read_corpus(path, kind="passage"):  # a second pass, only to name the lines
        if isinstance(row, Record):
            if row.id in seen:
                raise EvalDataError(f"{path}:{row.line}: duplicate passage id {row.id!r} (first on line {seen[row.id]})")
            seen[row.id] = row.line


def _unique(records: list[Record], path: Path) -> None:
    first: dict[str, int] = {}
    for r in records:
        if r.id in first:
            raise EvalDataError(f"{path}:{r.line}: duplicate id {r.id!r} (first on line {first[r.id]})")
        first[r.id] = r.line


def _qrels_file(folder: Path, split: str) -> Path:
    for p in (folder / "qrels" / f"{split}.tsv", folder / "qrels.tsv"):
        if p.is_file():
            return p
    raise EvalDataError(f"{folder}: no qrels: expected qrels/{split}.tsv or qrels.tsv")


def read_qrels(path: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """query id -> {passage id: (score, line)}; the header line (``query-id ...``) is skipped."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if number == 1 and fields[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if not line.strip():
                continue
            if len(fields) != 3 or not fields[0].strip() or not fields[1].strip():
                raise EvalDataError(f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {line.strip()!r:.80}")
            try:
                score = int(fields[2])
            except ValueError:
                raise EvalDataError(f"{path}:{number}: score {fields[2]!r} is not an integer") from None
            q, p = fields[0].strip(), fields[1].strip()
            if p in out.setdefault(q, {}):
                raise EvalDataError(f"{path}:{number}: a second judgement of passage {p!r} for query {q!r} "
                                    f"(first on line {out[q][p][1]})")
            out[q][p] = (score, number)
    if not out:
        raise EvalDataError(f"{path}: empty qrels: no judgement lines")
    return out


def load_beir(folder: Path, split: str = "test") -> EvalSet:
    skipped: Counter = Counter()
    qpath = folder / "queries.jsonl"
    queries = _records(qpath, "query", skipped, "queries")
    _unique(queries, qpath)
    qrels_path = _qrels_file(folder, split)
    judged = read_qrels(qrels_path)
    known = {q.id for q in queries}
    for q, by_p in judged.items():
        if q not in known:
            raise EvalDataError(f"{qrels_path}:{min(ln for _, ln in by_p.values())}: query {q!r} is not in {qpath.name}")
    wanted = {p for by_p in judged.values() for p in by_p}
    n, rows = scan_corpus(folder / "corpus.jsonl", skipped, wanted)
    for q, by_p in judged.items():
        for p, (_, line) in by_p.items():
            if p not in rows:
                raise EvalDataError(f"{qrels_path}:{line}: passage {p!r} is not in corpus.jsonl (or its text is empty)")
    out = EvalSet("beir", folder / "corpus.jsonl", [], passages=n, judged_rows=rows, skipped=skipped)
    for q in queries:
        by_p = judged.get(q.id)
        if not by_p:
            skipped["queries with no judgement in qrels"] += 1
        elif not any(score > 0 for score, _ in by_p.values()):
            skipped["queries whose judgements are all 0 (nothing relevant)"] += 1
        else:
            out.queries.append((q.id, q.item))
            out.qrels[q.id] = {p: score for p, (score, _) in by_p.items()}
    if not out.queries:
        raise EvalDataError(f"{qrels_path}: no query of {qpath.name} has a relevant passage (score > 0)")
    return out


def _answers(value: object, path: Path, number: int, as_text: bool = False) -> list[str]:
    if as_text:  # DPR's qa.csv writes the list as text: JSON, or a Python literal
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise EvalDataError(f"{path}:{number}: the answers {value!r:.60} are not a list") from None
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise EvalDataError(f"{path}:{number}: the answers must be a list of strings, got {value!r:.60}")
    return value


def read_questions(path: Path) -> list[tuple[str, str, list[str], int]]:
    """(id, question, answers, line) for every question; the id is the line number unless given."""
    out = []
    jsonl = path.suffix == ".jsonl"
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if jsonl:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise EvalDataError(f"{path}:{number}: invalid JSON: {e}") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("question"), str):
                    raise EvalDataError(f"{path}:{number}: expected {{\"question\": str, \"answers\": [str, ...]}}")
                qid = str(obj.get("id", number))
                question, answers = obj["question"], _answers(obj.get("answers"), path, number)
            else:
                fields = next(csv.reader([line.rstrip("\r\n")], delimiter="\t", strict=False))
                if len(fields) != 2:
                    raise EvalDataError(f"{path}:{number}: expected 'question<TAB>[answers]', got {len(fields)} field(s)")
                qid, question, answers = str(number), fields[0], _answers(fields[1], path, number, as_text=True)
            out.append((qid, question, answers, number))
    return out


def load_dpr(passages: Path, questions: Path) -> EvalSet:
    for p in (passages, questions):
        if not p.is_file():
            raise EvalDataError(f"{str(p)!r} does not exist or is not a file")
    skipped: Counter = Counter()
    n, _ = scan_corpus(passages, skipped)
    out = EvalSet("dpr", passages, [], passages=n, skipped=skipped)
    first: dict[str, int] = {}
    for qid, question, answers, number in read_questions(questions):
        if qid in first:
            raise EvalDataError(f"{questions}:{number}: duplicate question id {qid!r} (first on line {first[qid]})")
        first[qid] = number
        if not question.strip():
            skipped["questions with empty text"] += 1
        elif not any(a.strip() for a in answers):
            skipped["questions with no answer string"] += 1
        else:
            out.queries.append((qid, question))
            out.answers[qid] = [a for a in answers if a.strip()]
    if not out.queries:
        raise EvalDataError(f"{questions}: no question with an answer")
    return out
