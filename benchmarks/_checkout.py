"""Imported first by a script run as ``python benchmarks/NAME.py``: Python then puts only
``benchmarks/`` on ``sys.path``, so this adds the checkout's root, where the ``benchmarks``
and ``tests`` packages live (``python -m benchmarks.NAME`` needs nothing)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
