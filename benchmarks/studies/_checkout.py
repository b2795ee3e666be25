"""Imported first by a study run as ``python benchmarks/studies/NAME.py``: Python then puts only
``benchmarks/studies/`` on ``sys.path``, so this adds the checkout's root, where the ``benchmarks``,
``bowrt`` and ``tests`` packages live (``python -m benchmarks.studies.NAME`` needs nothing)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
