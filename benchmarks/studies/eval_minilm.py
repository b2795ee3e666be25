"""What does bowrt's int8 do to retrieval on a labelled set, against bowrt fp32 and PyTorch fp32?

Answer: docs/eval.md, "fp32, int8 and PyTorch on a labelled set".

    python benchmarks/studies/eval_minilm.py [-o results/eval-minilm] [--bootstrap 1000]

The set is the one the tests build from Python's standard library (tests/eval_sets.py:
each function's docstring summary is a query, its body the relevant passage, module
docstrings' paragraphs the distractors), in BEIR's layout. The model is all-MiniLM-L6-v2
(real weights; its bundles from the bench cache). ``bowrt eval`` runs the fp32 and int8
bundles; PyTorch fp32 eager (transformers, the bundle's pooling, lengths and
normalization) is ranked by the same exact search and scored by the same metrics. Prints
each metric with the paired bootstrap 95 % interval of its difference to PyTorch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness import models  # noqa: E402
from benchmarks.harness.quiet import quiet_libraries  # noqa: E402
from bowrt.bundle import verify_bundle  # noqa: E402
from bowrt.eval import EvalSettings, evaluate, load, metrics, search  # noqa: E402
from bowrt.eval.run import score  # noqa: E402
from bowrt.runtime import host  # noqa: E402
from tests.eval_sets import write_beir  # noqa: E402
from tests.reference import torch_reference  # noqa: E402


def pytorch_per_query(folder: Path, bundle: Path, data: Path) -> dict[str, np.ndarray]:
    m = verify_bundle(bundle)
    s = load(data)
    rows = [json.loads(line) for line in (data / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    fmt = m.text.passage_format
    passages = [fmt.format(title=r["title"], text=r["text"]) if r.get("title") else r["text"] for r in rows]

    def vectors(texts: list[str], length: int) -> np.ndarray:
        v = torch_reference(folder, texts, length, pooling=m.pooling)
        return v / np.linalg.norm(v, axis=1, keepdims=True) if m.normalize else v

    q = vectors([t for _, t in s.queries], m.text.query_max_length)
    _, ranking = search.top_k(q, [vectors(passages, m.text.passage_max_length)], 100)
    return score(s, ranking)


def _pts(x: float) -> str:
    return f"{round(100 * x, 1) + 0.0:+.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=Path("results/eval-minilm"))
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    quiet_libraries()  # the PyTorch reference's load report is not the result
    folder = models.minilm_folder()
    bundles = models.ensure_bundles(folder, ("fp32", "int8"), None, print)
    data = write_beir(args.out / "stdlib-beir")
    res = evaluate([bundles["fp32"], bundles["int8"]], data, args.out, EvalSettings(bootstrap=args.bootstrap))
    ref = pytorch_per_query(folder, bundles["fp32"], data)
    names = list(ref)
    print(f"\n{res['set']['queries']} queries x {res['set']['passages']} passages; host: {host.summary()}; "
          f"bootstrap {args.bootstrap}; points (percent); [95 % interval of the difference to PyTorch fp32]\n")
    print("| system | " + " | ".join(names) + " |\n|" + "---|" * (len(names) + 1))
    print("| PyTorch fp32 | " + " | ".join(f"{100 * v:.1f}" for v in metrics.means(ref).values()) + " |")
    for name in ("fp32", "int8"):
        b = res["bundles"][name]
        cells = []
        for m in names:
            d = metrics.bootstrap_diff(ref[m], np.array(b["per_query"][m]), args.bootstrap)
            cells.append(f"{100 * b['metrics'][m]:.1f} [{_pts(d['low'])}, {_pts(d['high'])}]")
        print(f"| bowrt {name} | " + " | ".join(cells) + " |")
    c = res["comparisons"]["int8"]
    print("\nint8 - fp32: " + ", ".join(f"{m} {_pts(d['diff'])} [{_pts(d['low'])}, {_pts(d['high'])}]"
                                       for m, d in c["metrics"].items()))
    print(f"int8 against fp32: overlap@10 {c['overlap@10']:.3f}, overlap@100 {c['overlap@100']:.3f}; "
          f"queries lost at {c['changed']['metric']}: {len(c['changed']['lost'])}, gained: {len(c['changed']['gained'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
