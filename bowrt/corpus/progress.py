"""``bowrt encode``'s progress on stderr: lines done of the total, texts/s, ETA.

Counted in input lines (every line is a record, a reject or a TSV header), so the
count ends at the total that :func:`count_lines` found before the job began. The
count moves when a shard encoder reports rows (per ``ENCODE_CHUNK`` texts in this
process, per batch on Ray) and when a shard completes or is reused; a ticker
thread redraws between those, so the rate and ETA stay current while a long chunk
computes. On a terminal it is one line redrawn in place every ``EVERY_S["tty"]``
seconds; otherwise (a log file, CI) a line every ``EVERY_S["log"]`` seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TextIO

EVERY_S = {"tty": 1.0, "log": 10.0}  # seconds between redraws


def count_lines(path: Path) -> int | None:
    """Lines in a plain file, as :func:`~bowrt.corpus.read.read_corpus` reads them (a last line
    without a newline counts); None for a ``.gz`` file, which would have to be decompressed twice."""
    if path.suffix == ".gz":
        return None
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            n, last = n + chunk.count(b"\n"), chunk[-1:]
    return n + (last != b"\n")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Counts lines settled and texts encoded; draws itself on ``stream`` (default stderr)."""

    def __init__(self, enabled: bool, total: int | None = None, stream: TextIO | None = None, *,
                 label: str = "bowrt encode", unit: str = "lines"):
        self.enabled, self.total, self.stream = enabled, total, stream or sys.stderr
        self.label, self.unit = label, unit  # ``bowrt eval`` counts passages searched with it too
        self.lines = self.encoded = self.reused = 0
        self.t0 = time.perf_counter()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._ticker = None
        if enabled:
            self._ticker = threading.Thread(target=self._tick, name="bowrt-encode-progress", daemon=True)
            self._ticker.start()

    def texts(self, n: int) -> None:
        """``n`` more texts encoded (a shard encoder's report)."""
        with self._lock:
            self.encoded += n
            self.lines += n  # settled exactly at the shard's end, by lines_done

    def lines_done(self, last_line: int, reused: int = 0) -> None:
        """Every input line up to ``last_line`` is settled (a shard written, or ``reused`` texts kept)."""
        with self._lock:
            self.lines, self.reused = max(self.lines, last_line), self.reused + reused

    @property
    def rate(self) -> float:
        return self.encoded / max(time.perf_counter() - self.t0, 1e-9)

    def line(self) -> str:
        with self._lock:
            lines, encoded, reused, total = self.lines, self.encoded, self.reused, self.total
        elapsed = time.perf_counter() - self.t0
        rate = encoded / max(elapsed, 1e-9)
        if total is None:
            done, eta = f"{lines} {self.unit}", "ETA ?"
        else:
            pct = 100.0 * lines / total if total else 100.0
            left = max(total - lines, 0)
            done = f"{lines}/{total} {self.unit} ({pct:.1f}%)"
            eta = "ETA 0:00:00" if not left else f"ETA {_clock(left / rate)}" if rate > 0 else "ETA ?"
        return (f"{self.label}: {done}, {rate:.1f} texts/s, {eta}, elapsed {_clock(elapsed)}"
                + (f", {reused} reused" if reused else ""))

    def _draw(self, final: bool = False) -> None:
        text = self.line()
        if self._tty:
            self.stream.write("\r" + text + "\x1b[K" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(EVERY_S["tty" if self._tty else "log"]):
            self._draw()

    def close(self, finished: bool = False) -> None:
        """Stop the ticker and draw the last line (the count at the total when the job ``finished``)."""
        if not self.enabled or self._stop.is_set():
            return
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if finished and self.total is not None:
            self.lines = self.total
        self._draw(final=True)
