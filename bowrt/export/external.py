"""An int8 bundle's weights outside its graph: ``model.onnx`` + ``model.onnx.data``.

ONNX Runtime reads a graph's embedded weights into memory twice over (the parsed model,
then a tensor per initializer) and keeps its packed GEMM weights beside parts of them. A
weight stored as ONNX external data at an aligned offset is instead mapped from the file
(``GetFileContent``: mmap first, a copied read where mapping fails), so only the pages a
kernel touches are resident: the packed copy of each GEMM weight, the embedding rows the
texts use. Measured on the bert-base twin's int8 bundle, ``Encoder`` load in a fresh
process: peak RSS 186 -> 111 MB over the imports, load 309 -> 200 ms (docs/bundle.md,
"Size, cold start and memory"; ``benchmarks/studies/bundle_footprint.py``).

The layout: every initializer with at least :data:`THRESHOLD` raw bytes moves to
:data:`~bowrt.bundle.DATA_FILE`, in graph order, each at an offset aligned to 4 KiB (a
page) or, from 1 MiB, to 64 KiB (Windows' mapping granularity); the gaps are zeros. The
bytes are the same; so is every node. Deterministic: the same graph gives the same two files.
"""

from __future__ import annotations

from pathlib import Path

from bowrt.bundle import DATA_FILE, MODEL_FILE

THRESHOLD = 4096
PAGE = 4096
LARGE, LARGE_ALIGN = 1 << 20, 1 << 16


def store_external(src: Path, out_dir: Path) -> Path:
    """Write ``src``'s graph to ``out_dir/model.onnx`` with its large weights in
    ``out_dir/model.onnx.data``; returns the graph's path. A graph with no weight that
    large is written whole, with no data file."""
    import onnx

    model = onnx.load(str(src))
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = out_dir / DATA_FILE
    offset = 0
    with open(data_path, "wb") as f:
        for t in model.graph.initializer:
            if not t.HasField("raw_data") or len(t.raw_data) < THRESHOLD:
                continue
            raw = t.raw_data
            pad = -offset % (LARGE_ALIGN if len(raw) >= LARGE else PAGE)
            f.write(b"\0" * pad)
            offset += pad
            f.write(raw)
            del t.external_data[:]
            for key, value in (("location", DATA_FILE), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            t.data_location = onnx.TensorProto.EXTERNAL
            t.ClearField("raw_data")
            offset += len(raw)
    if not offset:
        data_path.unlink()
    onnx.save(model, str(out_dir / MODEL_FILE))
    return out_dir / MODEL_FILE


def graph_files(path: Path) -> dict[str, Path]:
    """The bundle files of the graph at ``path``: itself, and its data file where it has one."""
    data = path.parent / DATA_FILE
    return {MODEL_FILE: path, DATA_FILE: data} if data.is_file() else {MODEL_FILE: path}
