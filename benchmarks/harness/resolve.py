"""What a run runs: the model folder and bowrt bundles, one spec per system, and which can run here.

Bundles come from the command line or are exported from the model into the cache (once,
never timed). Every system gets the first bundle's text rules, pooling and lengths, so like
is compared with like. A system that cannot run is recorded with its reason and the one
step that brings it in (``fix``), and the report lists those together.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from benchmarks.harness import models, systems
from benchmarks.harness.config import BenchConfig
from benchmarks.harness.spec import SystemSpec, Unavailable, is_bowrt
from bowrt.errors import OptionError

Log = Callable[[str], None]


def resolve_model(cfg: BenchConfig, log: Log, notes: list[str]) -> tuple[Path | None, dict[str, Path]]:
    """(model folder for the peers, {system name: bundle}) from the command line, exporting when needed."""
    from bowrt.bundle import verify_bundle

    model_dir = Path(cfg.model).expanduser() if cfg.model else None
    if model_dir is not None and not (model_dir / "config.json").is_file():
        raise OptionError(f"--model {cfg.model!r} is not a local Hugging Face model folder (no config.json)")
    if cfg.bundles:
        bundles: dict[str, Path] = {}
        for b in cfg.bundles:
            variant = bundle_variant(verify_bundle(b))
            name = f"bowrt-{variant}" if f"bowrt-{variant}" not in bundles else f"bowrt-{variant}-{len(bundles)}"
            bundles[name] = Path(b)
        if model_dir is None:
            src = Path(verify_bundle(cfg.bundles[0]).source_model)
            model_dir = src if (src / "config.json").is_file() else None
        return model_dir, bundles
    gates = list(cfg.gates) or None
    if model_dir is None:
        model_dir = models.twin_folder(log)
        gates = gates or models.RANDOM_WEIGHT_GATES
        notes.append("model: the bert-base twin (BERT-base shape, seeded random weights): speed and size only; "
                     f"its int8 bundle was exported with gates {models.RANDOM_WEIGHT_GATES}")
    variants = ("fp32", "int8", "int8-speed") + (("fp16",) if cfg.device == "cuda" else ())
    paths = models.ensure_bundles(model_dir, variants, gates, log)
    return model_dir, {f"bowrt-{v}": p for v, p in paths.items()}


def bundle_variant(manifest: Any) -> str:
    """``int8-speed`` for an int8 bundle of a non-default profile, else the variant."""
    profile = (manifest.quantization or {}).get("profile", "default") if manifest.variant == "int8" else "default"
    return manifest.variant if profile == "default" else f"{manifest.variant}-{profile}"


def make_specs(cfg: BenchConfig, model_dir: Path | None, bundles: dict[str, Path], threads: int) -> dict[str, SystemSpec]:
    """One spec per system: the peers of ``--against`` (in its order), then the bundles."""
    from bowrt.bundle import verify_bundle

    m = verify_bundle(next(iter(bundles.values())))
    base = SystemSpec(
        "torch", model_dir=str(model_dir) if model_dir else None, pooling=m.pooling, normalize=m.normalize,
        threads=threads, device=cfg.device, query_max_length=m.text.query_max_length,
        passage_max_length=m.text.passage_max_length, query_prefix=m.text.query_prefix, passage_prefix=m.text.passage_prefix,
    )
    specs = {n: replace(base, name=n) for n in systems.expand_against(list(cfg.against))}
    specs.update({n: replace(base, name=n, bundle=str(p), model_dir=None) for n, p in bundles.items()})
    return specs


def not_runnable(specs: dict[str, SystemSpec]) -> dict[str, dict[str, Any]]:
    """``{name: info}`` for the systems that cannot run here, each with its reason and fix (cheap checks only)."""
    info: dict[str, dict[str, Any]] = {}
    for n, spec in specs.items():
        why = None
        if not is_bowrt(n) and spec.model_dir is None:
            why = Unavailable("needs a local copy of the bundle's source model (no hub here)", fix="--model DIR")
        elif not is_bowrt(n):
            why = systems.unavailable(n)
        if why is not None:
            info[n] = unavailable_info(why)
    return info


def unavailable_info(why: Unavailable) -> dict[str, Any]:
    return {"status": "unavailable", "reason": str(why), "fix": why.fix}
