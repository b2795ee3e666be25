"""One adapter per system under test: load from a local folder, then ``encode(texts, kind)``.

Every adapter is built from a :class:`SystemSpec` (plain data, JSON-able), so
the same system can be rebuilt in a fresh process for cold-start and peak-RSS
figures. ``prepare`` does the one-time heavy work in the parent (ONNX exports
for the peers that need a file); ``load`` only loads. A system that cannot run
here raises :class:`Unavailable` with the reason, and the report shows it.

All systems use the pooling of the bundle under test (CLS for bowdpr and the
twin; MiniLM's mean + normalize for the accuracy table), token_type_ids zeros,
the bundle's query/passage max lengths and text prefixes.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import st_int8
from bowrt.atomic import atomic_folder
from bowrt.errors import OptionError

PEERS = ("torch", "torch-bf16", "st", "st-onnx", "st-onnx-O3", "st-onnx-int8", "ort-qint8", "optimum", "fastembed",
         "ct2", "ct2-int8", "ct2-fp32", "openvino", "openvino-fp32", "openvino-int8", "llama.cpp")
GROUPS = {"st-onnx": ("st-onnx", "st-onnx-O3", "st-onnx-int8"),  # --against st-onnx means all three
          "ct2": ("ct2-int8", "ct2-fp32"), "openvino": ("openvino-fp32", "openvino-int8")}
PRECISION = {"torch-bf16": "bf16", "st-onnx-int8": "int8", "ort-qint8": "int8", "ct2-int8": "int8", "openvino-int8": "int8",
             "llama.cpp": "int8"}
# Peers that run in the peer environment's worker (benchmarks/peer_env.py) when they cannot run here.
PEER_ENV_SYSTEMS = ("st-onnx", "st-onnx-O3", "st-onnx-int8", "optimum", "openvino-fp32", "openvino-int8")
BATCH = 32  # batch size for systems that take one (transformers has none of its own: users loop)
ST_O_LEVEL = "O3"  # sentence-transformers' efficiency guide example for CPU


class Unavailable(RuntimeError):
    """This system cannot run here; the message says why (shown in the report)."""


@dataclass(frozen=True)
class SystemSpec:
    name: str  # "torch", "bowrt-int8", ...
    model_dir: str | None = None  # the Hugging Face folder (peers)
    bundle: str | None = None  # the bowrt bundle (bowrt-*)
    pooling: str = "cls"
    normalize: bool = False
    threads: int = 1
    device: str = "cpu"
    query_max_length: int = 32
    passage_max_length: int = 256
    query_prefix: str = ""
    passage_prefix: str = ""
    files: dict[str, str] = field(default_factory=dict)  # what prepare() produced

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SystemSpec:
        return cls(**json.loads(text))

    @property
    def precision(self) -> str:
        if self.name.startswith("bowrt-"):
            return self.name.split("-")[1]  # bowrt-int8, or bowrt-int8-2 for a second int8 bundle
        return PRECISION.get(self.name, "fp32")


def expand_against(names: list[str]) -> list[str]:
    """``--against`` items -> peer names (groups expanded); unknown names fail with the valid list."""
    out: list[str] = []
    for n in names:
        if n not in PEERS:
            raise OptionError(f"unknown system {n!r} for --against; valid: {', '.join(PEERS)}")
        out.extend(GROUPS.get(n, (n,)))
    return list(dict.fromkeys(out))


def version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _weights_bytes(folder: Path) -> int:
    names = ("model.safetensors", "pytorch_model.bin")
    return sum((folder / n).stat().st_size for n in names if (folder / n).is_file())


def _max_len(spec: SystemSpec, kind: str) -> int:
    return spec.query_max_length if kind == "query" else spec.passage_max_length


def _prefixed(spec: SystemSpec, texts: list[str], kind: str) -> list[str]:
    prefix = spec.query_prefix if kind == "query" else spec.passage_prefix
    return [prefix + t for t in texts] if prefix else list(texts)


def length_order(texts: list[str]) -> np.ndarray:
    """SentenceTransformer.encode's order: longest text (in characters) first."""
    return np.argsort([-len(t) for t in texts], kind="stable")


def encode_sorted(texts: list[str], batch: int, run: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """SentenceTransformer.encode's batching around ``run``: sort by length, batches of ``batch``, order restored."""
    order = length_order(texts)
    out = [run([texts[i] for i in order[s : s + batch]]) for s in range(0, len(texts), batch)]
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out)[np.argsort(order)]


class SortedBatches:
    """A peer run with SentenceTransformer.encode's batching: the folder's HF tokenizer, ``_run`` per batch."""

    sorts_by_length = True

    def __init__(self, spec: SystemSpec):
        from transformers import AutoTokenizer

        self.spec, self.batch = spec, BATCH
        self.tokenizer = AutoTokenizer.from_pretrained(spec.files["folder"])

    def _run(self, texts: list[str], kind: str) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        return encode_sorted(_prefixed(self.spec, texts, kind), self.batch, lambda b: self._run(b, kind))


def pool_np(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """:func:`pool` in numpy (``[b, s, h]`` float32, ``[b, s]`` 0/1)."""
    if pooling == "cls":
        vec = hidden[:, 0]
    else:
        m = mask[..., None].astype(np.float32)
        vec = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    if normalize:
        vec = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    return vec.astype(np.float32)


# --- PyTorch (transformers) ------------------------------------------------------------
_TORCH_MODELS: dict[tuple[str, str], Any] = {}  # fp32 and bf16 autocast share one copy in a process


class TorchSystem:
    """transformers ``AutoModel`` eager; fp32, or bf16 under ``torch.autocast``."""

    sorts_by_length = False

    def __init__(self, spec: SystemSpec, bf16: bool = False):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.spec, self.bf16 = spec, bf16
        torch.set_num_threads(spec.threads)
        key = (spec.model_dir, spec.device)
        if key not in _TORCH_MODELS:
            try:
                model = AutoModel.from_pretrained(spec.model_dir, add_pooling_layer=False)
            except TypeError:  # not a BERT: no pooler switch
                model = AutoModel.from_pretrained(spec.model_dir)
            _TORCH_MODELS[key] = (AutoTokenizer.from_pretrained(spec.model_dir), model.eval().to(spec.device))
        self.tokenizer, self.model = _TORCH_MODELS[key]
        self.batching = f"batches of {BATCH} in the caller's order, padded to each batch's longest"
        self.model_bytes = _weights_bytes(Path(spec.model_dir))

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        import torch

        texts = _prefixed(self.spec, texts, kind)
        out = []
        amp = torch.autocast(self.spec.device, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with torch.inference_mode(), amp:
            for i in range(0, len(texts), BATCH):
                enc = self.tokenizer(
                    texts[i : i + BATCH], padding=True, truncation=True, max_length=_max_len(self.spec, kind), return_tensors="pt"
                )
                ids, mask = enc["input_ids"].to(self.spec.device), enc["attention_mask"].to(self.spec.device)
                hidden = self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
                out.append(pool(hidden.float(), mask, self.spec.pooling, self.spec.normalize).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def pool(hidden: Any, mask: Any, pooling: str, normalize: bool) -> Any:
    """CLS or masked mean over a torch ``[b, s, h]``, then optional L2 normalization."""
    if pooling == "cls":
        vec = hidden[:, 0]
    else:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if normalize:
        vec = vec / vec.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return vec


# --- sentence-transformers ----------------------------------------------------------------
def _st_modules() -> Any:
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as modules
    return modules


def _require_optimum() -> None:
    try:
        import optimum.onnxruntime  # noqa: F401
    except Exception as e:  # ImportError, or an incompatible transformers breaking its imports
        tf = version("transformers") or "?"
        why = f"{type(e).__name__}: {e}" if version("optimum-onnx") else "optimum-onnx is not installed"
        hint = ""
        if tf.split(".")[0].isdigit() and int(tf.split(".")[0]) >= 5:
            hint = f"; optimum-onnx 0.1.0 (the newest release we know) requires transformers<4.58 and this environment has transformers {tf}"
        raise Unavailable(f"needs optimum's ONNX Runtime backend (pip install 'optimum[onnxruntime]'): {why}{hint}") from e


class STSystem:
    """sentence-transformers ``SentenceTransformer.encode``: torch, or its ONNX backend (plain / O3 / int8)."""

    sorts_by_length = True

    def __init__(self, spec: SystemSpec):
        import torch
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        torch.set_num_threads(spec.threads)
        mods = _st_modules()
        if spec.name == "st":
            tr = mods.Transformer(spec.model_dir, max_seq_length=spec.passage_max_length)
            self.model_bytes = _weights_bytes(Path(spec.model_dir))
        else:
            _require_optimum()
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = spec.threads
            kwargs = {"provider": "CPUExecutionProvider", "session_options": so, "file_name": spec.files["onnx_file"]}
            tr = mods.Transformer(spec.files["folder"], max_seq_length=spec.passage_max_length, backend="onnx", model_kwargs=kwargs)
            self.model_bytes = (Path(spec.files["folder"]) / spec.files["onnx_file"]).stat().st_size
        dim = tr.get_embedding_dimension() if hasattr(tr, "get_embedding_dimension") else tr.get_word_embedding_dimension()
        modules = [tr, mods.Pooling(dim, pooling_mode=spec.pooling)] + ([mods.Normalize()] if spec.normalize else [])
        self.model = SentenceTransformer(modules=modules, device=spec.device)
        self.batching = f"encode(batch_size={BATCH}): sorts by length (characters), padded per batch"

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        self.model.max_seq_length = _max_len(self.spec, kind)
        return self.model.encode(_prefixed(self.spec, texts, kind), batch_size=BATCH, convert_to_numpy=True, show_progress_bar=False)


def prepare_st_onnx(spec: SystemSpec, work: Path) -> SystemSpec:
    """Export the ST ONNX model (and its O3 / int8 variants) into a copy of the folder, once."""
    _require_optimum()
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import (
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    folder = work / f"st-onnx-{Path(spec.model_dir).name}"
    config = st_int8.host_config()  # the quantization config for this host's ISA, as ST's docs advise
    files = {"st-onnx": "onnx/model.onnx", "st-onnx-O3": f"onnx/model_{ST_O_LEVEL}.onnx",
             "st-onnx-int8": f"onnx/{st_int8.int8_file(config)}"}
    if not (folder / files[spec.name]).is_file():
        if not (folder / files["st-onnx"]).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(spec.model_dir, folder)
            SentenceTransformer(str(folder), backend="onnx", device="cpu").save(str(folder))  # exports onnx/model.onnx
        model = SentenceTransformer(str(folder), backend="onnx", device="cpu")
        if spec.name == "st-onnx-O3":
            export_optimized_onnx_model(model, ST_O_LEVEL, str(folder))
        elif spec.name == "st-onnx-int8":
            export_dynamic_quantized_onnx_model(model, config, str(folder))
    return replace(spec, files={"folder": str(folder), "onnx_file": files[spec.name]})


# --- optimum -------------------------------------------------------------------------------
class OptimumSystem:
    """optimum ``ORTModelForFeatureExtraction`` (exported from the folder at load) + the HF tokenizer."""

    sorts_by_length = False

    def __init__(self, spec: SystemSpec):
        _require_optimum()
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForFeatureExtraction
        from transformers import AutoTokenizer

        self.spec = spec
        so = ort.SessionOptions()
        so.intra_op_num_threads = spec.threads
        self.model = ORTModelForFeatureExtraction.from_pretrained(
            spec.model_dir, export=True, provider="CPUExecutionProvider", session_options=so
        )
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_dir)
        self.batching = f"batches of {BATCH} in the caller's order, padded to each batch's longest"
        self.model_bytes = _weights_bytes(Path(spec.model_dir))

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        import torch

        texts = _prefixed(self.spec, texts, kind)
        out = []
        for i in range(0, len(texts), BATCH):
            enc = self.tokenizer(texts[i : i + BATCH], padding=True, truncation=True, max_length=_max_len(self.spec, kind), return_tensors="pt")
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                token_type_ids=torch.zeros_like(enc["input_ids"])).last_hidden_state
            out.append(pool(torch.as_tensor(hidden).float(), enc["attention_mask"], self.spec.pooling, self.spec.normalize).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# --- fastembed -----------------------------------------------------------------------------
def export_hidden_state_onnx(model_dir: str, path: Path) -> Path:
    """A plain feature-extraction ONNX (``last_hidden_state`` out, no fusions), as ``optimum-cli export onnx`` makes."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    ids = torch.arange(16, dtype=torch.long).reshape(2, 8) % int(model.config.vocab_size)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded row, so the mask computation is traced
    axes = {0: "batch", 1: "sequence"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about the mask, not actionable here
        torch.onnx.export(
            Hidden().eval(), (ids, mask, torch.zeros_like(ids)), str(path),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes},
            opset_version=17, do_constant_folding=True, dynamo=False,
        )
    return path


def build_folder(folder: Path, src: Path, files: tuple[str, ...], build: Callable[[Path], None]) -> None:
    """Write ``folder`` atomically: ``build(tmp)`` makes the model files, ``files`` are copied from ``src``
    (those that exist), then ``tmp`` replaces ``folder``. An interrupted build leaves no half folder."""
    with atomic_folder(folder, force=True) as tmp:
        build(tmp)
        for name in files:
            if (src / name).is_file():
                shutil.copy(src / name, tmp / name)


def prepare_fastembed(spec: SystemSpec, work: Path) -> SystemSpec:
    """A fastembed-style local model folder: ``onnx/model.onnx`` + tokenizer files, truncation at the passage max."""
    src = Path(spec.model_dir)
    folder = work / f"fastembed-{src.name}-{spec.passage_max_length}"

    def build(tmp: Path) -> None:
        export_hidden_state_onnx(str(src), tmp / "onnx" / "model.onnx")
        tok_cfg = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
        tok_cfg["model_max_length"] = spec.passage_max_length  # fastembed truncates there
        tok_cfg.pop("max_length", None)
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg), encoding="utf-8")

    if not (folder / "onnx" / "model.onnx").is_file():
        build_folder(folder, src, ("config.json", "tokenizer.json", "special_tokens_map.json", "vocab.txt"), build)
    return replace(spec, files={"folder": str(folder)})


class FastembedSystem:
    """fastembed ``TextEmbedding`` on a local folder (``add_custom_model`` + ``specific_model_path``)."""

    sorts_by_length = False

    def __init__(self, spec: SystemSpec):
        try:
            from fastembed import TextEmbedding
            from fastembed.common.model_description import ModelSource, PoolingType
        except ImportError as e:
            raise Unavailable(f"fastembed does not import ({e}); pip install fastembed") from e
        self.spec = spec
        folder = Path(spec.files["folder"])
        name = f"bowrt-bench/{folder.name}-{spec.pooling}-{int(spec.normalize)}"
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        known = {m["model"].lower() for m in TextEmbedding.list_supported_models()}
        if name.lower() not in known:
            TextEmbedding.add_custom_model(
                model=name, pooling=PoolingType.CLS if spec.pooling == "cls" else PoolingType.MEAN,
                normalization=spec.normalize, sources=ModelSource(hf=name), dim=int(cfg["hidden_size"]),
                model_file="onnx/model.onnx",
            )
        providers = ["CUDAExecutionProvider"] if spec.device == "cuda" else ["CPUExecutionProvider"]
        self.model = TextEmbedding(model_name=name, specific_model_path=str(folder), threads=spec.threads, providers=providers)
        self.batching = "embed(batch_size=256) in the caller's order, padded per batch"
        self.model_bytes = (folder / "onnx" / "model.onnx").stat().st_size

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        # fastembed has one truncation length per model; switch it per kind (single-threaded use only).
        self.model.model.tokenizer.enable_truncation(max_length=_max_len(self.spec, kind))
        return np.stack(list(self.model.embed(_prefixed(self.spec, texts, kind), batch_size=256)))


# --- bowrt -------------------------------------------------------------------------------------
class BowrtSystem:
    """A bowrt bundle through :class:`bowrt.runtime.Encoder`; keeps each call's timings when asked."""

    sorts_by_length = True

    def __init__(self, spec: SystemSpec):
        from bowrt.runtime import Encoder

        self.spec = spec
        if spec.precision == "fp16" and spec.device != "cuda":
            raise Unavailable("fp16 bundles run on GPU providers only (no CUDA here)")
        self.encoder = Encoder(spec.bundle, providers=spec.device, threads=spec.threads)
        self.batching = f"sorts by length, token budget {self.encoder.max_batch_tokens} (padding counted), pads per batch"
        self.model_bytes = (Path(spec.bundle) / "model.onnx").stat().st_size
        self.record = False
        self.log: list[tuple[float, Any]] = []  # (end-to-end seconds, Timings) per call while recording

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        import time

        t0 = time.perf_counter()
        if not self.record:
            return self.encoder.encode_queries(texts) if kind == "query" else self.encoder.encode_passages(texts)
        got = self.encoder.encode_timed(kind, texts)
        self.log.append((time.perf_counter() - t0, got.timings))
        return got.vectors


def _local_reason(name: str) -> str | None:
    """Why ``name`` cannot run in this process, from cheap import checks; None if it may."""
    need = {"torch": ("torch", "transformers"), "torch-bf16": ("torch", "transformers"),
            "st": ("torch", "sentence-transformers"), "fastembed": ("fastembed", "torch"),
            "ort-qint8": ("torch", "transformers", "onnx"), "ct2-int8": ("ctranslate2", "torch", "transformers"),
            "ct2-fp32": ("ctranslate2", "torch", "transformers"), "openvino-fp32": ("openvino", "torch", "transformers", "onnx"),
            "openvino-int8": ("openvino", "nncf", "torch", "transformers", "onnx")}
    missing = [p for p in need.get(name, ()) if version(p) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (pip install {' '.join(missing)})"
    if name == "optimum" or name.startswith("st-onnx"):
        try:
            _require_optimum()
        except Unavailable as e:
            return str(e)
    if name == "llama.cpp":
        from benchmarks import peers_llamacpp

        return peers_llamacpp.unavailable_reason()
    return None


def peer_python() -> Path | None:
    """The peer environment's python when it is built (and this is not already a worker), else None."""
    import os

    from benchmarks import peer_env, peer_worker

    if os.environ.get(peer_worker.WORKER_ENV):
        return None
    venv = peer_env.env_dir()
    return peer_env.python_of(venv) if peer_env.ready_info(venv) is not None else None


def runs_in_worker(name: str) -> bool:
    """True when ``name`` cannot run here but the peer environment's worker can run it."""
    return name in PEER_ENV_SYSTEMS and _local_reason(name) is not None and peer_python() is not None


def unavailable_reason(name: str) -> str | None:
    """Why ``name`` can run neither here nor in the peer environment's worker; None if it may run."""
    why = _local_reason(name)
    if why is None or runs_in_worker(name):
        return None
    if name in PEER_ENV_SYSTEMS:
        from benchmarks import peer_env

        return f"{why}; it runs in the peer environment, which is not built: {peer_env.how_to_build()}"
    return why


def prepare(spec: SystemSpec, work: Path) -> SystemSpec:
    """One-time files a system needs (parent process only); any failure becomes :class:`Unavailable`."""
    try:
        if runs_in_worker(spec.name):
            from benchmarks import peer_worker

            return peer_worker.prepare_in_worker(spec, work, peer_python())
        if spec.name == "fastembed":
            if version("fastembed") is None:
                raise Unavailable("fastembed is not installed (pip install fastembed)")
            return prepare_fastembed(spec, work)
        if spec.name.startswith("st-onnx"):
            return prepare_st_onnx(spec, work)
        if spec.name == "ort-qint8":
            return st_int8.prepare(spec, work)
        if spec.name == "optimum":
            _require_optimum()
        if spec.name.startswith("ct2-"):
            from benchmarks import peers_ct2

            return peers_ct2.prepare(spec, work)
        if spec.name.startswith("openvino-"):
            from benchmarks import peers_openvino

            return peers_openvino.prepare(spec, work)
        if spec.name == "llama.cpp" and (why := _local_reason(spec.name)):
            raise Unavailable(why)
    except Unavailable:
        raise
    except Exception as e:
        raise Unavailable(f"failed to prepare its model files: {type(e).__name__}: {e}") from e
    return spec


def load(spec: SystemSpec) -> Any:
    """Build the adapter for ``spec``; any failure to load becomes :class:`Unavailable`."""
    try:
        if runs_in_worker(spec.name):
            from benchmarks.peer_worker import WorkerSystem

            return WorkerSystem(spec, peer_python())
        if spec.name in ("torch", "torch-bf16"):
            return TorchSystem(spec, bf16=spec.name == "torch-bf16")
        if spec.name == "st" or spec.name.startswith("st-onnx"):
            return STSystem(spec)
        if spec.name == "optimum":
            return OptimumSystem(spec)
        if spec.name == "fastembed":
            return FastembedSystem(spec)
        if spec.name == "ort-qint8":
            return st_int8.StInt8System(spec)
        if spec.name.startswith("bowrt-"):
            return BowrtSystem(spec)
        if spec.name.startswith("ct2-"):
            from benchmarks.peers_ct2 import CT2System

            return CT2System(spec)
        if spec.name.startswith("openvino-"):
            from benchmarks.peers_openvino import OpenVINOSystem

            return OpenVINOSystem(spec)
        if spec.name == "llama.cpp":
            raise Unavailable(_local_reason(spec.name) or "llama.cpp: no adapter for a working llama-cpp-python yet")
    except Unavailable:
        raise
    except Exception as e:
        raise Unavailable(f"failed to load: {type(e).__name__}: {e}") from e
    raise OptionError(f"unknown system {spec.name!r}; valid: {', '.join(PEERS)}, bowrt-<variant>")
