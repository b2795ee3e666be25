"""Batch planning: which rows run together, under a token budget that counts padding.

Pure functions of row lengths, so they are tested without a model; the Encoder
(``runtime/encoder.py``), ``Encoder.encode`` (``runtime/st_encode.py``) and the
benchmark studies all plan with this one function.
"""

from __future__ import annotations

from collections.abc import Sequence

# Token budget per batch, padding included (rows x longest row). CPU: measured
# with `python benchmarks/studies/budget_sweep.py --budgets 384,512,768,1024,2048
# --passages 200 --rounds 4` (bert-base twin, mixed-length passages, 2 threads;
# medians relative to the best): fp32 384 0.99, 512 1.00, 768 0.99, 1024 0.92,
# 2048 0.87; int8 384 0.95, 512 0.98, 768 1.00, 1024 0.90, 2048 0.80 (a second
# sweep, 3 rounds: int8 512 1.00, 2048 0.77). Bigger batches outgrow the caches
# and this machine's memory bandwidth is low; 512 is the smallest budget within
# 3% of the best for both. (An earlier sweep on this VM had put 2048 near the
# best; it spanned 1024-32768 only.) GPU: not measured (no GPU here); a GPU needs
# far more work per launch to fill its SMs.
DEFAULT_MAX_BATCH_TOKENS = {"cpu": 512, "gpu": 32768}
# Cap on rows per batch (queries are short: 32768 tokens would be 2000+ rows).
# It is also the batch dimension of the TensorRT optimization profile.
DEFAULT_MAX_BATCH_SIZE = 256


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int,
                 narrow: Sequence[tuple[int, int]] = ()) -> list[list[int]]:
    """Group item indices into batches.

    Items are sorted longest first (ties keep the caller's order) so rows of
    similar length share a batch and little is padded; a batch closes before
    ``rows x longest`` would exceed ``max_batch_tokens`` or rows would exceed
    ``max_batch_size``. ``narrow``: ``(width, tokens)`` tiers, narrowest first; a
    batch whose longest row has at most ``width`` tokens closes at the first such
    tier's ``tokens`` instead (the Encoder's smaller budgets for short rows in lanes,
    ``runtime/lanes.py``). An item longer than the budget on its own runs alone.
    Longest first also means the biggest batch runs first: memory trouble shows
    at once, not at the end of a long call.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    longest, budget = 0, max_batch_tokens
    for i in order:
        if cur and ((len(cur) + 1) * longest > budget or len(cur) >= max_batch_size):
            batches.append(cur)
            cur = []
        if not cur:
            longest = lengths[i]  # sorted: the first row of a batch is its longest
            budget = next((tokens for width, tokens in narrow if longest <= width), max_batch_tokens)
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
