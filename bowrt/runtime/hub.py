"""Bundles on the Hugging Face Hub: ``Encoder.from_pretrained`` downloads one, ``bowrt push`` publishes one.

    enc = Encoder.from_pretrained("org/bowdpr-bundles", subfolder="int8")   # hub repo, one bundle in int8/
    enc = Encoder.from_pretrained("bundles/int8")                           # a folder: as Encoder(...)

A download fetches ``manifest.json`` first, then exactly the files it lists (not the rest
of the repo, e.g. the other variants' folders), into the hub cache (``HF_HOME``,
``cache_dir=``); the Encoder then verifies every file's sha256 before it loads, so a
tampered or truncated cache is refused like a tampered folder. ``huggingface_hub`` is
imported here, inside the functions, never at ``import bowrt.runtime``.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bowrt.bundle import MANIFEST, SIGNATURE_FILE, read_manifest, verify_bundle
from bowrt.errors import BowrtError, BundleError, BundleMissingFileError, OptionError
from bowrt.options import check_bool

# "org/name": hub ids of bundles have an owner (the hub's own rule for the characters).
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")


def looks_like_repo_id(name: Any) -> bool:
    return isinstance(name, str) and bool(_REPO_ID.fullmatch(name)) and ".." not in name and not name.endswith(".")


def local_bundle(bundle: str | os.PathLike[str]) -> Path:
    """The folder of ``Encoder(bundle)``; a missing one that reads as ``org/name`` gets the hub hint."""
    path = Path(bundle)
    if not path.exists() and looks_like_repo_id(bundle):
        raise BundleMissingFileError(
            f"bundle folder {bundle!r} does not exist; it looks like a hub repo id: load it with "
            f"Encoder.from_pretrained({bundle!r})"
        )
    return path


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as e:  # pragma: no cover - a dependency of tokenizers and of bowrt
        raise BundleError("loading from the hub needs huggingface_hub: pip install huggingface_hub") from e
    return huggingface_hub


def _check_str(name: str, value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and value.strip("/")):
        raise OptionError(f"{name} must be a non-empty str or None, got {value!r}")
    return value.strip("/") if value is not None else None


def from_pretrained(cls: type, name_or_path: str | os.PathLike[str], revision: str | None = None,
                    cache_dir: str | os.PathLike[str] | None = None, *, subfolder: str | None = None,
                    token: str | bool | None = None, local_files_only: bool = False,
                    trt_cache_dir: str | os.PathLike[str] | None = None, **encoder_options: Any) -> Any:
    """An Encoder from a hub repo (``"org/name"``) or a local bundle folder.

    Args:
        name_or_path: an existing bundle folder (loaded as ``Encoder(folder)``), or a hub
            repo id ``org/name`` holding a bundle (at its root, or in ``subfolder``).
        revision: branch, tag or commit of the repo (default: its main branch).
        cache_dir: the hub cache (default ``$HF_HUB_CACHE``, ``~/.cache/huggingface/hub``).
            The Encoder's own ``cache_dir`` (TensorRT engines) is ``trt_cache_dir`` here.
        subfolder: the bundle's folder inside the repo or the local folder (``"int8"``).
        token: hub token for private repos (default: the logged-in one, ``hf auth login``).
        local_files_only: use the hub cache only, never the network (as ``HF_HUB_OFFLINE=1``).
        encoder_options: the Encoder's (``providers``, ``threads``, ``max_batch_tokens``, ...).

    Raises :class:`BundleMissingFileError` for a repo, revision or bundle that cannot be
    found (offline with nothing cached: how to get it), naming what is missing, and the
    Encoder's own errors (a checksum that does not match: :class:`BundleChecksumError`).
    """
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "bundle", "unknown", "cache_dir")]
    unknown = sorted(set(encoder_options) - set(valid))
    if unknown:
        raise OptionError(f"unknown option(s) {', '.join(unknown)} for Encoder.from_pretrained; valid: revision, "
                          f"cache_dir, subfolder, token, local_files_only, trt_cache_dir, {', '.join(valid)}")
    revision, subfolder = _check_str("revision", revision), _check_str("subfolder", subfolder)
    check_bool("local_files_only", local_files_only)
    if trt_cache_dir is not None:
        encoder_options["cache_dir"] = trt_cache_dir
    if isinstance(name_or_path, os.PathLike) or Path(name_or_path).is_dir() or not looks_like_repo_id(name_or_path):
        folder = Path(name_or_path)
        if not folder.is_dir():
            raise BundleMissingFileError(f"{str(name_or_path)!r} is neither a bundle folder nor a hub repo id (org/name)")
        return cls(folder / subfolder if subfolder else folder, **encoder_options)
    folder = download_bundle(name_or_path, revision=revision, cache_dir=cache_dir, subfolder=subfolder, token=token,
                             local_files_only=local_files_only, verify=False)  # the Encoder verifies every file
    return cls(folder, **encoder_options)


def download_bundle(repo_id: str, *, revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
                    subfolder: str | None = None, token: str | bool | None = None, local_files_only: bool = False,
                    verify: bool = True) -> Path:
    """Download the bundle in ``repo_id`` (its root or ``subfolder``) into the hub cache; return its folder.

    Only ``manifest.json``, the files it lists and ``manifest.sig`` (where signed) are fetched.
    ``verify``: check every file's size and sha256 (:func:`~bowrt.bundle.verify_bundle`) before returning.
    """
    hub = _hub()
    sub = _check_str("subfolder", subfolder) or ""
    prefix = f"{sub}/" if sub else ""
    where = repo_id + (f"@{revision}" if revision else "") + (f" (subfolder {sub!r})" if sub else "")
    kw = {"repo_id": repo_id, "revision": revision, "cache_dir": cache_dir, "token": token,
          "local_files_only": local_files_only}
    with _hub_errors(hub, repo_id, where, cache_dir, revision):
        snapshot = Path(hub.snapshot_download(allow_patterns=[prefix + MANIFEST], **kw))
        if not (snapshot / prefix / MANIFEST).is_file():
            raise _not_a_bundle(hub, where, prefix, snapshot, kw)
        listed = read_manifest(snapshot / prefix).files
        wanted = [prefix + MANIFEST, prefix + SIGNATURE_FILE] + [prefix + n for n in listed]  # the signature if any
        snapshot = Path(hub.snapshot_download(allow_patterns=wanted, **kw))
    folder = snapshot / sub if sub else snapshot
    if verify:
        verify_bundle(folder)
    return folder


def _not_a_bundle(hub: Any, where: str, prefix: str, snapshot: Path, kw: dict[str, Any]) -> BundleMissingFileError:
    """Name the missing manifest, and the repo's bundles (folders with a manifest.json) if it has any."""
    files: list[str] = []
    if not (kw["local_files_only"] or hub.constants.HF_HUB_OFFLINE):
        try:
            files = hub.HfApi(token=kw["token"]).list_repo_files(kw["repo_id"], revision=kw["revision"])
        except OSError:  # a hint only; the error below stands without it
            files = []
    elif snapshot.is_dir():
        files = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    bundles = sorted({str(Path(f).parent) for f in files if Path(f).name == MANIFEST})
    hint = f"; bundles in this repo: {', '.join(bundles)} (pass subfolder=)" if bundles else ""
    held = f"; it holds {', '.join(sorted(files)[:8])}{' ...' if len(files) > 8 else ''}" if files and not bundles else ""
    return BundleMissingFileError(f"{where} is not a bowrt bundle: it has no {prefix}{MANIFEST}{hint}{held}")


@contextmanager
def _hub_errors(hub: Any, repo_id: str, where: str, cache_dir: Any, revision: str | None) -> Iterator[None]:
    """huggingface_hub's errors -> BundleErrors that say what to do."""
    errors = hub.errors
    try:
        yield
    except BowrtError:
        raise
    except errors.RevisionNotFoundError as e:
        raise BundleMissingFileError(f"{where}: the repo has no revision {revision!r}") from e
    except errors.RepositoryNotFoundError as e:  # gated repos too
        raise BundleMissingFileError(f"{where}: no such repo on the hub, or it is private or gated: check the id, "
                                     "log in (`hf auth login`) or pass token=") from e
    except errors.LocalEntryNotFoundError as e:  # offline (or unreachable) and not in the cache
        cache = cache_dir or hub.constants.HF_HUB_CACHE
        why = "HF_HUB_OFFLINE is set" if hub.constants.HF_HUB_OFFLINE else "the hub cannot be reached"
        opts = (f" --revision {revision}" if revision else "") + (f" --cache-dir {cache_dir}" if cache_dir else "")
        raise BundleMissingFileError(
            f"{where} is not in the hub cache ({cache}) and {why}: download it once with network access "
            f"(`hf download {repo_id}{opts}`, or from_pretrained without HF_HUB_OFFLINE / local_files_only), "
            f"then load it offline; or pass a local bundle folder ({e})"
        ) from e
    except errors.HFValidationError as e:
        raise BundleError(f"{repo_id!r} is not a valid hub repo id: {e}") from e
    except OSError as e:  # other HTTP errors, connection failures, a full disk
        raise BundleError(f"{where}: could not download from the hub: {e}") from e


def push_bundle(folder: str | os.PathLike[str], repo_id: str, *, path_in_repo: str | None = None,
                revision: str | None = None, private: bool | None = None, token: str | bool | None = None,
                commit_message: str | None = None) -> str:
    """Verify the bundle in ``folder``, then upload exactly its files (and ``manifest.sig``, where
    signed) to ``repo_id`` (created if missing) at the repo root or ``path_in_repo``; returns the
    commit's URL."""
    folder = Path(folder)
    m = verify_bundle(folder)
    path_in_repo = _check_str("path_in_repo", path_in_repo)
    if private is not None:
        check_bool("private", private)
    if not looks_like_repo_id(repo_id):
        raise OptionError(f"repo_id must be a hub repo id org/name, got {repo_id!r}")
    hub = _hub()
    api = hub.HfApi(token=token)
    with _hub_errors(hub, repo_id, repo_id, None, revision):
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), path_in_repo=path_in_repo, revision=revision,
            allow_patterns=[MANIFEST, *m.files, *([SIGNATURE_FILE] if (folder / SIGNATURE_FILE).is_file() else [])],
            commit_message=commit_message or f"bowrt bundle: {m.variant} of {m.source_model}",
        )
    return str(getattr(info, "commit_url", info))
