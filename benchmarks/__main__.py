"""``python -m benchmarks``: the benchmark run (``--help`` lists every option)."""

import sys

from benchmarks.harness.cli import main

sys.exit(main(sys.argv[1:]))
