"""Keep third-party libraries' own output off the bench's terminal: their prints and bars go to a log file.

Peers print while they build their files and load: NNCF's statistics table and progress
bar, converters' messages, transformers' bars. The bench shows its own progress only; what
the libraries wrote is kept, in the run's folder (``third_party.log``), for when something
fails. The redirect is of file descriptors 1 and 2, so it catches C++ and child-process
output too, and ``sys.stdout`` / ``sys.stderr`` point at the same file inside the block.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LOG_NAME = "third_party.log"


def quiet_libraries() -> None:
    """The environment and settings of a benchmark process: local folders only, no bars, errors only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: no hub here, and none wanted in a benchmark
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as tf_logging

        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()
    except ImportError:
        pass


@contextlib.contextmanager
def output_to(log_file: Path | None, title: str) -> Iterator[None]:
    """Inside the block, everything written to fds 1 and 2 is appended to ``log_file`` under ``title``
    (None: nothing is redirected)."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_file, "a", encoding="utf-8", errors="replace") as f:
        start = f.tell()
        f.write(f"\n=== {title}\n")
        f.flush()
        empty = f.tell()
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:  # Python's streams too: they need not write through fds 1 and 2 (a test's capture does not)
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            f.flush()
            if os.fstat(f.fileno()).st_size == empty:  # nothing was printed: no empty heading either
                f.truncate(start)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
