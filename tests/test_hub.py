"""Encoder.from_pretrained against a hub cache built here (HF_HUB_OFFLINE=1: no network), and
``bowrt push`` against a mocked HfApi.

The cache has huggingface_hub's layout (file_download.py, _snapshot_download.py):
``models--org--repo/blobs/<id>``, ``snapshots/<commit>/<path>`` as relative symlinks to the
blobs, ``refs/main`` holding the commit. A bundle at the repo root and bundles in
subfolders; a tampered blob is refused; what is missing is named.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

hf = pytest.importorskip("huggingface_hub")

from bowrt import Encoder
from bowrt.bundle import MANIFEST, verify_bundle
from bowrt.cli import main
from bowrt.errors import (
    BundleChecksumError,
    BundleError,
    BundleMissingFileError,
    OptionError,
)
from bowrt.runtime import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEXTS = ["who wrote hamlet?", "The Berlin Wall fell in 1989."]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf.constants, "HF_HUB_OFFLINE", True)  # read at import; set it for this test


def populate(cache: Path, repo_id: str, files: dict[str, Path], commit: str = COMMIT, ref: str | None = "main") -> Path:
    """Put ``files`` (path in repo -> source) in ``cache`` as a download of ``repo_id`` at ``commit`` leaves them."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    for rel, src in files.items():
        data = src.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return snapshot


def bundle_files(folder: Path, prefix: str = "") -> dict[str, Path]:
    return {prefix + p.name: p for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def cache(tmp_path, tiny_bundles) -> Path:
    """org/root: a bundle at the root; org/multi: fp32/ and fp16/ subfolders and a README."""
    cache = tmp_path / "hub"
    populate(cache, "org/root", bundle_files(tiny_bundles["fp32"]))
    readme = tmp_path / "README.md"
    readme.write_text("# bundles\n")
    populate(cache, "org/multi", {**bundle_files(tiny_bundles["fp32"], "fp32/"),
                                  **bundle_files(tiny_bundles["fp16"], "fp16/"), "README.md": readme})
    return cache


def test_offline_load_from_cache(cache, tiny_bundles):
    want = Encoder(tiny_bundles["fp32"], threads=1).encode_queries(TEXTS)
    enc = Encoder.from_pretrained("org/root", cache_dir=cache, threads=1)
    assert enc.bundle_dir == cache / "models--org--root" / "snapshots" / COMMIT
    assert np.array_equal(enc.encode_queries(TEXTS), want)
    assert np.array_equal(Encoder.from_pretrained("org/root", COMMIT, cache, threads=1).encode_queries(TEXTS), want)
    sub = Encoder.from_pretrained("org/multi", cache_dir=cache, subfolder="fp16", threads=1)
    assert sub.variant == "fp16" and sub.bundle_dir.name == "fp16"
    assert hub.download_bundle("org/multi", cache_dir=cache, subfolder="fp32/").name == "fp32"


def test_tampered_cached_file_is_refused(cache):
    blob = (cache / "models--org--root" / "snapshots" / COMMIT / "tokenizer.json").resolve()
    data = bytearray(blob.read_bytes())
    data[-2] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(BundleChecksumError, match="tokenizer.json"):
        Encoder.from_pretrained("org/root", cache_dir=cache)
    with pytest.raises(BundleChecksumError):
        hub.download_bundle("org/root", cache_dir=cache)


def test_missing_cached_file_is_named(cache):
    (cache / "models--org--root" / "snapshots" / COMMIT / "model.onnx").unlink()
    with pytest.raises(BundleMissingFileError, match="model.onnx"):
        Encoder.from_pretrained("org/root", cache_dir=cache)


def test_repo_that_is_not_a_bundle_names_what_is_missing(cache):
    with pytest.raises(BundleMissingFileError) as e:
        Encoder.from_pretrained("org/multi", cache_dir=cache)
    msg = str(e.value)
    assert "not a bowrt bundle" in msg and MANIFEST in msg and "fp16, fp32" in msg and "subfolder=" in msg
    with pytest.raises(BundleMissingFileError, match="int8/manifest.json"):
        Encoder.from_pretrained("org/multi", cache_dir=cache, subfolder="int8")


def test_offline_without_cache_says_how(tmp_path, cache):
    for repo, kw in (("org/absent", {}), ("org/root", {"revision": "v2"})):
        with pytest.raises(BundleMissingFileError) as e:
            Encoder.from_pretrained(repo, cache_dir=tmp_path / "empty" if not kw else cache, **kw)
        msg = str(e.value)
        assert "not in the hub cache" in msg and "HF_HUB_OFFLINE" in msg and f"hf download {repo}" in msg, msg
    assert "--revision v2" in msg


def test_folder_paths_and_repo_id_hint(tiny_bundles, tmp_path):
    root = tiny_bundles["fp32"].parent
    assert Encoder.from_pretrained(str(root), subfolder="fp16", threads=1).variant == "fp16"
    assert Encoder.from_pretrained(tiny_bundles["fp32"], threads=1).variant == "fp32"
    with pytest.raises(BundleMissingFileError, match=r"Encoder\.from_pretrained\('org/name'\)"):
        Encoder("org/name")
    with pytest.raises(BundleMissingFileError, match="does not exist"):
        Encoder(str(tmp_path / "nope"))
    with pytest.raises(BundleMissingFileError, match="neither a bundle folder nor a hub repo id"):
        Encoder.from_pretrained(str(tmp_path / "nope"))


def test_options_checked_before_any_download(monkeypatch):
    def no_download(*a, **k):
        raise AssertionError("downloaded before checking options")

    monkeypatch.setattr(hf, "snapshot_download", no_download)
    with pytest.raises(OptionError, match="unknown option.*thread.*valid:.*subfolder.*threads"):
        Encoder.from_pretrained("org/root", thread=1)
    for kw in ({"revision": ""}, {"subfolder": 3}, {"local_files_only": "yes"}):
        with pytest.raises(OptionError):
            Encoder.from_pretrained("org/root", **kw)


def test_trt_cache_dir_is_the_encoders_cache_dir(tiny_bundles):
    seen = {}

    class Fake:
        def __init__(self, bundle, providers=None, *, cache_dir=None, **unknown):
            seen.update(bundle=bundle, cache_dir=cache_dir)

    hub.from_pretrained(Fake, tiny_bundles["fp32"], trt_cache_dir="/tmp/trt")
    assert seen == {"bundle": tiny_bundles["fp32"], "cache_dir": "/tmp/trt"}


def _hub_error(name: str):
    cls = getattr(hf.errors, name)
    err = cls.__new__(cls)  # without the HTTP response their constructors want
    Exception.__init__(err, f"{name} from the hub")
    return err


@pytest.mark.parametrize(("name", "words"), [
    ("RepositoryNotFoundError", "no such repo on the hub, or it is private or gated"),
    ("GatedRepoError", "private or gated"),
    ("RevisionNotFoundError", "no revision 'v9'"),
    ("HfHubHTTPError", "could not download from the hub"),
])
def test_online_hub_errors_are_bundle_errors(monkeypatch, name, words):
    def fails(*a, **k):
        raise _hub_error(name)

    monkeypatch.setattr(hf, "snapshot_download", fails)
    with pytest.raises(BundleMissingFileError if "Not" in name or "Gated" in name else BundleError, match=words):
        Encoder.from_pretrained("org/x", revision="v9")


def test_online_repo_without_manifest_lists_its_bundles(monkeypatch, tmp_path):
    monkeypatch.setattr(hf.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "snapshot_download", lambda **k: str(tmp_path))  # no file matched the manifest

    class Api:
        def __init__(self, token=None):
            pass

        def list_repo_files(self, repo_id, revision=None):
            return ["README.md", "int8/manifest.json", "int8/model.onnx", "fp32/manifest.json"]

    monkeypatch.setattr(hf, "HfApi", Api)
    with pytest.raises(BundleMissingFileError, match=r"no manifest.json; bundles in this repo: fp32, int8"):
        Encoder.from_pretrained("org/x")


# --- push --------------------------------------------------------------------------
class FakeApi:
    calls: ClassVar[list] = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kw):
        FakeApi.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        FakeApi.calls.append(("upload_folder", kw))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/abc"})()


@pytest.fixture
def fake_api(monkeypatch):
    FakeApi.calls = []
    monkeypatch.setattr(hf, "HfApi", FakeApi)
    return FakeApi


def test_push_uploads_exactly_the_bundle(tiny_bundles, tmp_path, fake_api, capsys):
    folder = tmp_path / "int8"
    shutil.copytree(tiny_bundles["int8"], folder)
    (folder / "notes.txt").write_text("not part of the bundle")
    assert main(["push", str(folder), "org/bundles", "--path-in-repo", "int8", "--private"]) == 0
    assert "https://huggingface.co/org/bundles/commit/abc" in capsys.readouterr().out
    (_, repo, create_kw), (_, upload) = fake_api.calls
    assert repo == "org/bundles" and create_kw == {"private": True, "exist_ok": True}
    assert upload["repo_id"] == "org/bundles" and upload["path_in_repo"] == "int8"
    assert upload["folder_path"] == str(folder)
    assert sorted(upload["allow_patterns"]) == sorted([MANIFEST, *verify_bundle(folder).files])


def test_push_refuses_a_tampered_bundle(tiny_bundles, tmp_path, fake_api, capsys):
    folder = tmp_path / "fp32"
    shutil.copytree(tiny_bundles["fp32"], folder)
    with open(folder / "tokenizer.json", "a") as f:
        f.write(" ")
    assert main(["push", str(folder), "org/bundles"]) == 1
    assert "tokenizer.json" in capsys.readouterr().err
    assert fake_api.calls == []
    with pytest.raises(OptionError, match="org/name"):
        hub.push_bundle(tiny_bundles["fp32"], "not a repo")
    assert fake_api.calls == []
