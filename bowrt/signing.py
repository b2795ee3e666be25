"""Signed bundles: Ed25519 signatures over the exact bytes of ``manifest.json``.

The manifest holds the sha256 and size of every bundle file, so one signature over its
bytes covers the whole bundle. Checksums alone catch corruption, not a manifest
rewritten along with the files; the signature catches that, for whoever holds the
public key of the signer. The signatures live next to the manifest in ``manifest.sig``,
outside the files it lists (a file cannot list its own signature)::

    {"format": "bowrt-signature", "version": 1, "algorithm": "ed25519",
     "signatures": [{"key_id": "<16 hex>", "signature": "<base64>"}]}

``key_id`` is the first 16 hex digits of the sha256 of the raw 32-byte public key.
Signing with a second key adds its entry; signing again with a key replaces its own.

The ``cryptography`` package (``pip install 'bowrt[sign]'``) is imported inside the
functions that need it, so ``import bowrt.runtime`` and ``bowrt verify`` without
``--public-key`` never load it. Bad keys raise :class:`SigningKeyError` (an
:class:`OptionError`: the caller's key, not the bundle, is at fault); a bundle that the
keys do not prove raises :class:`BundleSignatureError` (:class:`BundleUnsignedError`
when it has no ``manifest.sig``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bowrt.atomic import write_text_atomic
from bowrt.bundle import MANIFEST, SIGNATURE_FILE, Manifest, read_manifest_bytes, verify_bundle
from bowrt.errors import (
    BundleSignatureError,
    BundleUnsignedError,
    MissingExtraError,
    SigningKeyError,
)

__all__ = ["check_signature", "generate_keypair", "key_id", "load_public_keys", "sign_bundle", "verify_signed"]

SIGNATURE_FORMAT = "bowrt-signature"
SIGNATURE_VERSION = 1
ALGORITHM = "ed25519"
# A manifest.sig holds a few short entries; anything this large is not one (and is not read whole).
MAX_SIGNATURE_FILE_BYTES = 1 << 20
MISSING_EXTRA = "signature checks need the sign extra: pip install 'bowrt[sign]'"

# A public key as callers give it: a path to a PEM file, or the PEM bytes themselves.
KeySource = str | os.PathLike[str] | bytes


def _crypto() -> Any:
    """The few ``cryptography`` names used here, or the one-line MissingExtraError."""
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise MissingExtraError(MISSING_EXTRA) from e
    return SimpleNamespace(InvalidSignature=exceptions.InvalidSignature, Ed25519PrivateKey=ed25519.Ed25519PrivateKey,
                           Ed25519PublicKey=ed25519.Ed25519PublicKey, ser=serialization)


def key_id(public_key: Any) -> str:
    """The first 16 hex digits of the sha256 of the raw 32-byte Ed25519 public key."""
    ser = _crypto().ser
    raw = public_key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# --- keys --------------------------------------------------------------------
def generate_keypair(out_path: str | os.PathLike[str], *, force: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key: ``out_path`` (PKCS8 PEM, unencrypted, mode 0600) and
    ``<out_path>.pub`` (SubjectPublicKeyInfo PEM). Returns both paths.

    Existing files are refused unless ``force``. Keeping the private key safe is the
    caller's part: whoever reads it can sign bundles that every holder of the public key trusts.
    """
    c = _crypto()
    key, pub = Path(out_path), Path(f"{out_path}.pub")
    if not force:
        for p in (key, pub):
            if p.exists():
                raise SigningKeyError(f"{str(p)!r} already exists; pass force=True (--force) to replace it")
    key.parent.mkdir(parents=True, exist_ok=True)
    private = c.Ed25519PrivateKey.generate()
    pem = private.private_bytes(c.ser.Encoding.PEM, c.ser.PrivateFormat.PKCS8, c.ser.NoEncryption())
    public_pem = private.public_key().public_bytes(c.ser.Encoding.PEM, c.ser.PublicFormat.SubjectPublicKeyInfo)
    tmp = key.with_name(key.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)
        # Created 0600 (never readable by others, not even for a moment), then renamed in.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # exactly 0600, whatever the umask
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, key)
        write_text_atomic(pub, public_pem.decode("ascii"))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SigningKeyError(f"cannot write the key {str(key)!r}: {e.strerror or e}") from e
    return key, pub


def _key_bytes(source: Any, what: str) -> tuple[bytes, str]:
    """PEM bytes and a name for messages, from a path or from the bytes themselves."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), f"the {what} given as bytes"
    if not isinstance(source, (str, os.PathLike)):
        raise SigningKeyError(f"a {what} must be a path to a PEM file or PEM bytes, got {type(source).__name__}")
    try:
        return Path(source).read_bytes(), repr(str(source))
    except OSError as e:
        raise SigningKeyError(f"cannot read the {what} {str(source)!r}: {e.strerror or e}") from e


def _load_private_key(path: str | os.PathLike[str]) -> Any:
    c = _crypto()
    data, name = _key_bytes(path, "private key")
    try:
        key = c.ser.load_pem_private_key(data, password=None)
    except TypeError as e:  # encrypted with a password
        raise SigningKeyError(f"{name} is encrypted; bowrt signs with unencrypted PKCS8 keys (bowrt keygen)") from e
    except ValueError as e:
        hint = " (this is a public key: sign with the private one)" if b"PUBLIC KEY" in data else ""
        raise SigningKeyError(f"{name} is not a PEM private key{hint}") from e
    if not isinstance(key, c.Ed25519PrivateKey):
        raise SigningKeyError(f"{name} is a {type(key).__name__}, not an Ed25519 key (make one with bowrt keygen)")
    return key


def load_public_keys(keys: KeySource | Sequence[KeySource]) -> list[tuple[str, Any]]:
    """``(key_id, Ed25519PublicKey)`` for each key: paths to PEM public keys, or PEM bytes
    (one key alone is taken as a list of one). Raises :class:`SigningKeyError` on a key
    that is missing, not PEM, or not Ed25519, and on an empty list (that trusts nothing)."""
    c = _crypto()
    if isinstance(keys, (str, bytes, bytearray, os.PathLike)):
        keys = [keys]
    if not isinstance(keys, Sequence) or not keys:
        raise SigningKeyError("trusted_keys must be a non-empty list of public key paths or PEM bytes "
                              f"(None: no signature check), got {keys!r}")
    loaded = []
    for source in keys:
        data, name = _key_bytes(source, "public key")
        try:
            key = c.ser.load_pem_public_key(data)
        except ValueError as e:
            hint = " (this is a private key: pass its .pub)" if b"PRIVATE KEY" in data else ""
            raise SigningKeyError(f"{name} is not a PEM public key{hint}") from e
        if not isinstance(key, c.Ed25519PublicKey):
            raise SigningKeyError(f"{name} is a {type(key).__name__}, not an Ed25519 key")
        loaded.append((key_id(key), key))
    return loaded


# --- manifest.sig --------------------------------------------------------------
def _read_signatures(folder: Path) -> list[tuple[str, bytes]] | None:
    """``(key_id, signature)`` of each entry of ``manifest.sig`` (None when there is none); any
    entry that is not a key id and a 64-byte base64 signature makes the whole file malformed."""
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        return None
    bad = f"{str(path)!r} is malformed"
    if path.stat().st_size > MAX_SIGNATURE_FILE_BYTES:
        raise BundleSignatureError(f"{bad}: {path.stat().st_size} bytes, more than a signature file holds")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleSignatureError(f"{bad}: not JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != SIGNATURE_FORMAT:
        raise BundleSignatureError(f"{bad}: not a {SIGNATURE_FORMAT} file")
    if doc.get("version") != SIGNATURE_VERSION or doc.get("algorithm") != ALGORITHM:
        raise BundleSignatureError(f"{bad}: version {doc.get('version')!r}, algorithm {doc.get('algorithm')!r}; "
                                   f"this bowrt reads version {SIGNATURE_VERSION}, {ALGORITHM}")
    entries = doc.get("signatures")
    if not isinstance(entries, list):
        raise BundleSignatureError(f"{bad}: 'signatures' is not a list")
    return [_entry(e, bad) for e in entries]


def _entry(e: Any, bad: str) -> tuple[str, bytes]:
    if not (isinstance(e, dict) and isinstance(e.get("key_id"), str) and isinstance(e.get("signature"), str)):
        raise BundleSignatureError(f"{bad}: an entry is not {{'key_id': str, 'signature': str}}: {e!r}")
    try:
        sig = base64.b64decode(e["signature"], validate=True)
    except (binascii.Error, ValueError) as err:
        raise BundleSignatureError(f"{bad}: the signature of key {e['key_id']} is not base64") from err
    if len(sig) != 64:
        raise BundleSignatureError(f"{bad}: the signature of key {e['key_id']} has {len(sig)} bytes, "
                                   "an Ed25519 signature 64")
    return e["key_id"], sig


def check_signature(folder: str | os.PathLike[str], trusted_keys: KeySource | Sequence[KeySource]) -> tuple[bytes, str]:
    """Check that ``manifest.sig`` holds a signature of ``manifest.json`` by one of ``trusted_keys``.

    Reads ``manifest.json`` once and returns ``(its bytes, the key_id that signed them)``:
    parse exactly those (``verify_bundle(folder, manifest_bytes)``), never a second read.
    Raises :class:`BundleUnsignedError` without ``manifest.sig``, :class:`BundleSignatureError`
    when no trusted key signed these bytes or the file is malformed, :class:`SigningKeyError`
    for a bad key. This checks the manifest only; the files' checksums are ``verify_bundle``'s.
    """
    c = _crypto()
    folder = Path(folder)
    keys = load_public_keys(trusted_keys)
    data = read_manifest_bytes(folder)
    entries = _read_signatures(folder)
    if entries is None:
        raise BundleUnsignedError(f"{str(folder)!r} has no {SIGNATURE_FILE}: it is not signed, and trusted keys "
                                  "were given (sign it with: bowrt sign BUNDLE --key KEY)")
    mismatched = []
    for kid, key in keys:
        for sig in (sig for signer, sig in entries if signer == kid):
            try:
                key.verify(sig, data)
            except c.InvalidSignature:
                mismatched.append(kid)
                continue
            return data, kid
    if mismatched:
        raise BundleSignatureError(
            f"{str(folder / MANIFEST)!r} does not match its signature by trusted key {', '.join(mismatched)}: "
            "the manifest (or the signature) was changed after signing")
    signers = ", ".join(signer for signer, _ in entries) or "nobody"
    raise BundleSignatureError(f"{str(folder)!r} is not signed by a trusted key: signed by {signers}; "
                               f"trusted: {', '.join(k for k, _ in keys)}")


def verify_signed(folder: str | os.PathLike[str], trusted_keys: Any = None) -> tuple[Manifest, str | None]:
    """:func:`~bowrt.bundle.verify_bundle`, after :func:`check_signature` when ``trusted_keys``
    is not None: ``(manifest, key_id)``, ``key_id`` None when no keys were given."""
    if trusted_keys is None:
        return verify_bundle(folder), None
    data, kid = check_signature(folder, trusted_keys)
    return verify_bundle(folder, data), kid


def sign_bundle(folder: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> str:
    """Sign ``manifest.json`` of a bundle that verifies; returns the signing key's key_id.

    The bundle is verified first (a bundle that does not verify is never signed), from
    the very bytes then signed. The signature is added to ``manifest.sig`` (replacing
    this key's earlier one), written atomically.
    """
    folder = Path(folder)
    key = _load_private_key(key_path)
    data = read_manifest_bytes(folder)
    verify_bundle(folder, data)
    kid = key_id(key.public_key())
    entries = _read_signatures(folder) or []  # a malformed file is refused, never overwritten
    if any(signer == kid for signer, _ in entries):
        entries = [(signer, key.sign(data) if signer == kid else sig) for signer, sig in entries]
    else:
        entries.append((kid, key.sign(data)))
    doc = {"format": SIGNATURE_FORMAT, "version": SIGNATURE_VERSION, "algorithm": ALGORITHM,
           "signatures": [{"key_id": k, "signature": base64.b64encode(sig).decode("ascii")} for k, sig in entries]}
    write_text_atomic(folder / SIGNATURE_FILE, json.dumps(doc, indent=2) + "\n")
    return kid
