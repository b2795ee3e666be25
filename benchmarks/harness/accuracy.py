"""Accuracy next to speed: every system against PyTorch fp32 on real weights (MiniLM).

Random weights (the twin) say nothing about ranking, so this table always uses
all-MiniLM-L6-v2 and the built-in probe set (``bowrt/export/data/probes.json``).
Like is compared with like: every system, the reference included, uses the
MiniLM bundle's pooling (mean + normalize, as its sentence-transformers folder
says), its max lengths and its text rules. Per system: min and mean cosine to
the reference, mean overlap@10 of dot-product rankings (probe queries against
probe passages), and batch invariance (32 passages alone vs in one call).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.harness import models, systems
from benchmarks.harness.spec import SystemSpec, Unavailable, bowrt_variant, is_bowrt
from bowrt.export.parity import compare, cosines
from bowrt.export.probes import load_text_set

INVARIANCE_ROWS = 32
QUICK_SUBSET = (16, 32, 8)  # --quick: queries, passages, batch-invariance rows


def _metrics(sys_: Any, ref_q: np.ndarray, ref_p: np.ndarray, queries: list[str], passages: list[str],
             rows: int) -> dict[str, Any]:
    q = sys_.encode(queries, "query")
    p = sys_.encode(passages, "passage")
    m: dict[str, Any] = {"status": "ok", **compare(ref_q, ref_p, q, p)}
    batch = passages[:rows]
    together = sys_.encode(batch, "passage")
    alone = np.concatenate([sys_.encode([t], "passage") for t in batch])
    m["batch_invariance_min_cosine"] = float(cosines(alone, together).min())
    return m


def _reference_spec(folder: Path, bundles: dict[str, Path], threads: int) -> tuple[SystemSpec, str]:
    """(PyTorch fp32 with the MiniLM bundle's pooling, lengths and prefixes, the bundle's passage format);
    the folder's own settings where no bundle could be exported."""
    from bowrt.bundle import verify_bundle
    from bowrt.export.source import sentence_transformers_settings

    st = sentence_transformers_settings(folder)
    manifest = verify_bundle(next(iter(bundles.values()))) if bundles else None
    rules = manifest.text if manifest else None
    spec = SystemSpec(
        "torch", model_dir=str(folder), threads=threads,
        pooling=manifest.pooling if manifest else st.get("pooling", "mean"),
        normalize=manifest.normalize if manifest else bool(st.get("normalize")),
        query_max_length=rules.query_max_length if rules else 32,
        passage_max_length=rules.passage_max_length if rules else int(st.get("max_seq_length", 256)),
        query_prefix=rules.query_prefix if rules else "", passage_prefix=rules.passage_prefix if rules else "",
    )
    return spec, rules.passage_format if rules else "{title} {text}"


def _probe_texts(fmt: str, quick: bool) -> tuple[list[str], list[str], int, Any]:
    """(queries, passages, batch-invariance rows, the probe set): the passages formatted by the bundle's rule,
    without the prefix, which each system adds itself (bowrt from its manifest)."""
    texts = load_text_set("probes")
    n_q, n_p, rows = QUICK_SUBSET if quick else (len(texts.queries), len(texts.passages), INVARIANCE_ROWS)
    passages = [fmt.format(title=t, text=x) if t else x for t, x in texts.passages][:n_p]
    return list(texts.queries)[:n_q], passages, rows, texts


def run_accuracy(names: list[str], threads: int, work: Path, log: Callable[[str], None], quick: bool = False,
                 third_party_log: Path | None = None) -> dict[str, Any]:
    """Accuracy of ``names`` (peer names and ``bowrt-<variant>``) on MiniLM; one entry per name.

    ``quick``: a subset of the probe set (16 queries, 32 passages, 8 rows for batch invariance).
    ``third_party_log``: where the peers' libraries print while they build and load.
    """
    folder = models.minilm_folder()
    variants = tuple(sorted({bowrt_variant(n) for n in names if is_bowrt(n)} - {"fp16"})) or ("fp32",)
    results: dict[str, Any] = {}
    try:
        bundles = models.ensure_bundles(folder, variants, None, log)
    except Exception as e:  # a failed gate or export: say so, keep the rest of the run
        bundles = {}
        for v in variants:
            results[f"bowrt-{v}"] = {"status": "unavailable", "reason": f"MiniLM export failed: {type(e).__name__}: {e}"}
    base, fmt = _reference_spec(folder, bundles, threads)
    queries, passages, rows, texts = _probe_texts(fmt, quick)
    _, ref = systems.bring_up(base, work, third_party_log)
    ref_q, ref_p = ref.encode(queries, "query"), ref.encode(passages, "passage")
    for name in names:
        if name in results:
            continue
        spec = replace(base, name=name)
        if is_bowrt(name):
            variant = bowrt_variant(name)
            if variant not in bundles:
                results[name] = {"status": "unavailable", "reason": f"no MiniLM {variant} bundle on this machine"}
                continue
            spec = replace(spec, bundle=str(bundles[variant]), model_dir=None)
        try:
            _, sys_ = systems.bring_up(spec, work, third_party_log)
            results[name] = _metrics(sys_, ref_q, ref_p, queries, passages, rows)
        except Unavailable as e:
            results[name] = {"status": "unavailable", "reason": str(e)}
    return {
        "description": (
            f"all-MiniLM-L6-v2 (real weights), {len(queries)} probe queries x {len(passages)} probe passages"
            f"{' (--quick subset)' if quick else ''}; reference PyTorch fp32 eager with the same pooling "
            f"({base.pooling}, normalize {base.normalize}) and lengths; batch invariance over {rows} passages."
        ),
        "model": str(folder),
        "probe_set": texts.describe(),
        "pooling": base.pooling,
        "normalize": base.normalize,
        "results": results,
    }
