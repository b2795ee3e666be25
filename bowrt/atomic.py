"""Write a folder or a file all at once: readers see the old one or the new one, never half.

Standard library only, so that ``bundle.py`` (which an edge host runs with nothing but
bowrt's base install) can use it. Every writer in bowrt goes through here: bundles,
Triton model repositories, the bench's model folders, ``bowrt encode``'s shard files.

Permissions follow the umask. ``tempfile.mkdtemp`` creates its folder mode 0700 (only
the owner may enter it), and renaming keeps the mode; a bundle written by one user and
served by another (a service account, a non-root Triton container, Ray workers under
another uid) would then fail with ``Permission denied``. The new folder is given the
mode ``mkdir`` would have given it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bowrt.errors import BundleError

__all__ = ["atomic_folder", "fsync_replace", "umask_mode", "write_text_atomic"]


def umask_mode(base: int = 0o777) -> int:
    """``base`` with the process's umask applied: the mode ``mkdir``/``open`` would give."""
    mask = os.umask(0)  # the only portable way to read it
    os.umask(mask)
    return base & ~mask


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``target``; on success it replaces ``target``.

    An existing ``target`` is refused unless ``force``; with ``force`` it is swapped out
    only once the new folder is complete (renamed aside, the new one renamed in, then the
    old one removed), so an interrupted write leaves the old folder as it was and no
    half-written one. On any error the temporary folder is removed and the error raised.
    """
    target = Path(target)
    if target.exists() and not force:
        raise BundleError(f"{str(target)!r} already exists; pass force=True (--force) to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, umask_mode())
        yield tmp
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename (fsynced first:
    a crash leaves the old file or the new one)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_replace(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename a finished ``tmp`` (written by other means: a memory map) over ``path``,
    fsynced first, as :func:`write_text_atomic` does its own."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
