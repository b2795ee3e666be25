"""DPR's answer match: does a passage contain one of a question's answers?

As DPR's evaluation does it (``dpr/data/qa_validation.py``: ``has_answer`` with
``match_type="string"``, and ``dpr/utils/tokenizers.py``: ``SimpleTokenizer``): the
passage text and each answer are put in Unicode NFD form, split into tokens, lower-cased,
and a hit is an answer's token sequence appearing contiguously among the passage's.
DPR's tokenizer is the regular expression ``([\\p{L}\\p{N}\\p{M}]+)|([^\\p{Z}\\p{C}])``: a run of
letters, digits and combining marks is one token, and any other character that is not a
separator or a control/format character is a token of its own. Python's ``re`` has no
``\\p{...}`` classes, so the same scan is written here over ``unicodedata.category``, the
standard library only. Only the passage's text is searched, not its title, as in DPR.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

_WORD = ("L", "N", "M")  # letters, numbers, marks: \p{L}\p{N}\p{M}
_SKIP = ("Z", "C")  # separators, other (control, format, unassigned): not \p{Z} nor \p{C}


def tokens(text: str) -> list[str]:
    """DPR's SimpleTokenizer words of ``text`` (NFD form, lower-cased)."""
    text = unicodedata.normalize("NFD", text)
    out: list[str] = []
    run: list[str] = []
    for ch in text:
        cat = unicodedata.category(ch)[0]
        if cat in _WORD:
            run.append(ch)
            continue
        if run:
            out.append("".join(run))
            run = []
        if cat not in _SKIP:
            out.append(ch)
    if run:
        out.append("".join(run))
    return [t.lower() for t in out]


def has_answer(answers: Iterable[list[str]], passage_tokens: list[str]) -> bool:
    """Whether any answer (given as its :func:`tokens`) appears contiguously in ``passage_tokens``."""
    for ans in answers:
        n = len(ans)
        if n == 0:
            continue
        first = ans[0]
        for i in range(len(passage_tokens) - n + 1):
            if passage_tokens[i] == first and passage_tokens[i : i + n] == ans:
                return True
    return False
