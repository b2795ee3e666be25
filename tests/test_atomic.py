"""The one atomic writer: all or nothing, and permissions that follow the umask."""

from __future__ import annotations

import os
import stat

import pytest

from bowrt.atomic import atomic_folder, write_text_atomic
from bowrt.errors import BundleError


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_folder_mode_follows_umask(tmp_path, umask_022):
    """mkdtemp makes 0700 folders; another user (a service account, a Triton container) must be able to read."""
    with atomic_folder(tmp_path / "b") as tmp:
        (tmp / "f").write_text("x")
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "b" / "f").stat().st_mode) == 0o644


def test_existing_refused_and_failed_write_keeps_old(tmp_path):
    target = tmp_path / "b"
    with atomic_folder(target) as tmp:
        (tmp / "v").write_text("old")
    with pytest.raises(BundleError, match="already exists"):
        with atomic_folder(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_folder(target, force=True) as tmp:
            (tmp / "v").write_text("half")
            raise RuntimeError("interrupted")
    assert (target / "v").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporary folder left behind
    with atomic_folder(target, force=True) as tmp:
        (tmp / "v").write_text("new")
    assert (target / "v").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_write_text_atomic(tmp_path, umask_022):
    path = tmp_path / "x.json"
    write_text_atomic(path, "1")
    write_text_atomic(path, "2")
    assert path.read_text() == "2" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
