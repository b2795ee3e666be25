"""The numerics self-check: does this host compute the bundle's vectors?

The export writes ``numerics.npz`` into every bundle: for a few probe texts (listed in
``manifest.parity.numerics``), their PyTorch fp32 vectors and the graph's own vectors
on the export host. Here the same texts go through the Encoder on this host, and

- against PyTorch, the worst cosine must meet the variant's gate (``min_cosine``);
- against the export host, the worst cosine must be ``host_min_cosine`` (int8 0.999,
  fp32 0.99999: the same vectors to float rounding, and for int8 the activation
  roundings it flips; export/parity.py, HOST_AGREEMENT, has the measurements) when the session runs
  on CPU, as the export did.

A miss raises :class:`NumericsError` naming this host's ISA and the figures. The
Encoder runs it at load by default (``check_numerics``); ``bowrt verify --numerics``
runs it on demand.

A pass is cached (:func:`cached_run`), so that only the first load on a host pays: the
verdict is kept under the user cache directory (``$BOWRT_CACHE_DIR``, else
``$XDG_CACHE_HOME/bowrt``, else ``~/.cache/bowrt``; ``numerics/<key>.json``, written
atomically), keyed by the sha256 of the bundle's manifest (which pins every file's
sha256), the host (CPU model, int8 ISA, int8 accumulation as measured), the onnxruntime
and bowrt versions, the provider and the graph run. A new host, ORT version or bundle
checks again; ``check_numerics="always"`` forces the check. A failure is never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bowrt._version import __version__
from bowrt.atomic import write_text_atomic
from bowrt.bundle import MANIFEST, NUMERICS_FILE
from bowrt.errors import BundleFormatError, NumericsError
from bowrt.runtime import host

# Bumped when what a cached verdict stands for changes.
CACHE_FORMAT = 1


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def run(encoder: Any) -> dict[str, Any]:
    """Encode the bundle's self-check texts on this host and compare; returns the figures
    (``checked: False`` for a bundle exported before bowrt carried them)."""
    spec = (encoder.manifest.parity or {}).get("numerics")
    if not spec:
        return {"checked": False, "reason": "the bundle carries no reference vectors (exported by bowrt < 0.2)"}
    t0 = time.perf_counter()
    try:
        with np.load(encoder.bundle_dir / spec["file"], allow_pickle=False) as ref:
            pytorch, bundle = ref["pytorch"], ref["bundle"]
        queries = [str(q) for q in spec["queries"]]
        passages = [(str(t), str(x)) for t, x in spec["passages"]]
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise BundleFormatError(f"the bundle's self-check data ({NUMERICS_FILE}) is unreadable: {e}") from e
    got = np.concatenate([encoder.encode_queries(queries, normalize=False),
                          encoder.encode_passages(passages, normalize=False)])
    if got.shape != pytorch.shape or got.shape != bundle.shape:
        raise BundleFormatError(f"the self-check vectors have shape {pytorch.shape}; this host produced {got.shape}")
    on_cpu = encoder.provider == "cpu"
    out = {
        "checked": True,
        "texts": len(got),
        "min_cosine_vs_pytorch": float(_cosines(got, pytorch).min()),
        "gate": float(spec.get("min_cosine", 0.0)),
        # The export ran on CPU; a GPU's float kernels are compared with PyTorch only.
        "min_cosine_vs_export_host": float(_cosines(got, bundle).min()) if on_cpu else None,
        "host_gate": float(spec.get("host_min_cosine", 0.0)) if on_cpu else None,
        "finite": bool(np.isfinite(got).all()),
        "seconds": time.perf_counter() - t0,
    }
    failures = []
    if not out["finite"]:
        failures.append("NaN or inf in the vectors")
    if out["min_cosine_vs_pytorch"] < out["gate"]:
        failures.append(f"min cosine to PyTorch fp32 {out['min_cosine_vs_pytorch']:.6f} < gate {out['gate']}")
    if on_cpu and out["min_cosine_vs_export_host"] < out["host_gate"]:
        failures.append(f"min cosine to the export host's vectors {out['min_cosine_vs_export_host']:.6f} "
                        f"< {out['host_gate']}")
    if failures:
        info = host.describe()
        raise NumericsError(
            f"the {encoder.variant} bundle {str(encoder.bundle_dir)!r} does not compute its vectors on this host "
            f"(int8 ISA {info['int8_isa']}, int8 accumulation {info['int8_accumulation']}, provider "
            f"{encoder.provider}): {'; '.join(failures)}. The export host was "
            f"{((encoder.manifest.parity or {}).get('host') or {}).get('int8_isa', 'not recorded')}. "
            "Re-export the bundle on this host, or use its fp32 bundle."
        )
    return out


def cache_dir() -> Path:
    """Where verdicts are kept: ``$BOWRT_CACHE_DIR``, else ``$XDG_CACHE_HOME/bowrt``, else ``~/.cache/bowrt``."""
    root = os.environ.get("BOWRT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "bowrt")
    return Path(root) / "numerics"


def cache_key(encoder: Any) -> dict[str, Any]:
    """What a cached verdict was measured on: the bundle (its manifest's sha256), the host,
    the software and the graph. Any change among them means a new check."""
    import onnxruntime as ort

    info = host.describe()
    return {
        "format": CACHE_FORMAT,
        "manifest_sha256": hashlib.sha256((encoder.bundle_dir / MANIFEST).read_bytes()).hexdigest(),
        "cpu_model": host.cpu_model(),
        "int8_isa": info["int8_isa"],
        "int8_accumulation": info["int8_accumulation"],
        "onnxruntime": ort.__version__,
        "bowrt": __version__,
        "provider": encoder.provider,
        "graph": encoder.graph_file,
    }


def _path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir() / f"{digest[:32]}.json"


def cached_run(encoder: Any, *, force: bool = False) -> dict[str, Any]:
    """:func:`run`, or the figures of a pass on the same bundle, host and software, read back
    (``cached: True``). A cache that cannot be read or written is passed over: the check runs."""
    key = cache_key(encoder)
    path = _path(key)
    if not force:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("key") == key and saved.get("result", {}).get("checked"):
                return {**saved["result"], "cached": True}
        except (OSError, ValueError, AttributeError):
            pass
    result = run(encoder)
    if result.get("checked"):  # a bundle without reference vectors is reported as such, uncached
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps({"key": key, "result": result}, indent=1) + "\n", fsync=False)
        except OSError:
            pass
        return {**result, "cached": False}
    return result
