"""Signed bundles (bowrt/signing.py): keygen, sign and verify through the API and the CLI.

The case that matters: a weight file changed with its sha256 and size rewritten in
manifest.json passes every checksum (verify_bundle), and only the signature refuses it.
Then each way a signature can fail, each with its typed error; bad keys; the extra that
stays unimported (``import bowrt.runtime``) and says how to install it when missing.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bowrt import Encoder, signing
from bowrt.bundle import DATA_FILE, MANIFEST, MODEL_FILE, SIGNATURE_FILE, sha256_file, verify_bundle
from bowrt.cli import build_parser, main
from bowrt.errors import (
    BundleChecksumError,
    BundleError,
    BundleSignatureError,
    BundleUnsignedError,
    MissingExtraError,
    OptionError,
    SigningKeyError,
)

TEXTS = ["who wrote hamlet?", "The Berlin Wall fell in 1989."]


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bowrt: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Two signers, a and b: name -> (private key, public key)."""
    folder = tmp_path_factory.mktemp("keys")
    return {name: signing.generate_keypair(folder / name) for name in ("a", "b")}


@pytest.fixture
def bundle(tiny_bundles, tmp_path) -> Path:
    """A copy of the tiny fp32 bundle, free to sign and change."""
    return Path(shutil.copytree(tiny_bundles["fp32"], tmp_path / "fp32"))


def _kid(pub: Path) -> str:
    ((kid, _),) = signing.load_public_keys([pub])
    return kid


def _rewrite_weights(folder: Path, name: str = MODEL_FILE) -> None:
    """Flip bytes inside the weight file ``name`` (model.onnx's middle: the word-embedding table) and
    rewrite its sha256 and size in manifest.json as write_bundle writes them: every checksum then agrees."""
    model = folder / name
    data = bytearray(model.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    model.write_bytes(bytes(data))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"][name] = {"sha256": sha256_file(model), "bytes": model.stat().st_size}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


# --- the round trip ------------------------------------------------------------
def test_keygen_sign_check_round_trip(bundle, keys, tiny_bundles):
    key, pub = keys["a"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    raw = base64.b64decode("".join(pub.read_text().splitlines()[1:-1]))[-32:]  # SPKI: the raw key last
    assert _kid(pub) == hashlib.sha256(raw).hexdigest()[:16]

    kid = signing.sign_bundle(bundle, key)
    assert kid == _kid(pub)
    doc = json.loads((bundle / SIGNATURE_FILE).read_text())
    assert doc["format"] == "bowrt-signature" and doc["version"] == 1 and doc["algorithm"] == "ed25519"
    assert [e["key_id"] for e in doc["signatures"]] == [kid]
    assert len(base64.b64decode(doc["signatures"][0]["signature"])) == 64
    data, by = signing.check_signature(bundle, [pub])
    assert data == (bundle / MANIFEST).read_bytes() and by == kid
    m = verify_bundle(bundle)  # the signature file is outside the manifest, and ignored by it
    assert SIGNATURE_FILE not in m.files and not (bundle / (SIGNATURE_FILE + ".tmp")).exists()
    want = Encoder(tiny_bundles["fp32"], threads=1).encode_queries(TEXTS)
    for trusted in ([pub], [str(pub)], [pub.read_bytes()], pub):  # paths, str, PEM bytes, one key alone
        enc = Encoder(bundle, threads=1, trusted_keys=trusted)
        np.testing.assert_array_equal(enc.encode_queries(TEXTS), want)


def test_keygen_sign_verify_through_the_cli(bundle, tmp_path, capsys):
    key = tmp_path / "k" / "signer"
    rc, out, _ = _run(capsys, "keygen", key)
    assert rc == 0 and str(key) in out and f"{key}.pub" in out and key.is_file() and Path(f"{key}.pub").is_file()
    first = key.read_bytes()
    rc, _, err = _run(capsys, "keygen", key)
    assert rc == 1 and "--force" in _one_line_error(err) and key.read_bytes() == first
    assert _run(capsys, "keygen", key, "--force")[0] == 0 and key.read_bytes() != first
    rc, out, err = _run(capsys, "sign", bundle, "--key", key)
    assert rc == 0 and SIGNATURE_FILE in out, err
    rc, out, _ = _run(capsys, "verify", bundle, "--public-key", f"{key}.pub")
    assert rc == 0 and out.startswith(f"OK {bundle}: fp32 bundle of ") and "sha256 OK  model.onnx" in out
    assert f"signature OK  {MANIFEST}  (signed by trusted key {_kid(Path(f'{key}.pub'))})" in out
    rc, plain, _ = _run(capsys, "verify", bundle)  # without --public-key: as before, no signature line
    assert rc == 0 and "signature" not in plain and plain == out.replace(out.splitlines()[-1] + "\n", "")


# --- the key case: a rewritten manifest ------------------------------------------
def test_rewritten_manifest_passes_the_checksums_and_fails_the_signature(bundle, keys, capsys):
    key, pub = keys["a"]
    signing.sign_bundle(bundle, key)
    _rewrite_weights(bundle)
    verify_bundle(bundle)  # every checksum agrees: this is what passed before signatures
    assert _run(capsys, "verify", bundle)[0] == 0
    Encoder(bundle, threads=1, check_numerics=False)  # and the changed graph loads
    with pytest.raises(BundleSignatureError, match="does not match its signature") as e:
        Encoder(bundle, threads=1, trusted_keys=[pub])
    assert not isinstance(e.value, BundleUnsignedError)
    rc, out, err = _run(capsys, "verify", bundle, "--public-key", pub)
    assert rc == 1 and out == "" and "changed after signing" in _one_line_error(err)


def test_an_int8_bundle_with_rewritten_weights_and_checksums_fails_its_signature(tiny_bundles, keys, tmp_path):
    """An int8 bundle keeps its weights in model.onnx.data: tampered there, checksum recomputed, the
    manifest signed before no longer verifies."""
    key, pub = keys["a"]
    bundle = Path(shutil.copytree(tiny_bundles["int8"], tmp_path / "int8"))
    signing.sign_bundle(bundle, key)
    _rewrite_weights(bundle, DATA_FILE)
    verify_bundle(bundle)
    with pytest.raises(BundleSignatureError, match="does not match its signature"):
        Encoder(bundle, threads=1, trusted_keys=[pub])


def test_the_encoder_parses_the_bytes_it_checked(bundle, keys, monkeypatch):
    """The files rewritten between the signature check and the parse (a race): the Encoder parses
    the manifest bytes that were verified, whose checksums no longer match the new weights."""
    key, pub = keys["a"]
    signing.sign_bundle(bundle, key)
    real = signing.check_signature

    def then_rewritten(folder, trusted_keys):
        checked = real(folder, trusted_keys)
        _rewrite_weights(Path(folder))
        return checked

    monkeypatch.setattr(signing, "check_signature", then_rewritten)
    with pytest.raises(BundleChecksumError, match=MODEL_FILE):
        Encoder(bundle, threads=1, trusted_keys=[pub])


def test_a_changed_file_is_never_signed(bundle, keys):
    with open(bundle / MODEL_FILE, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleChecksumError):
        signing.sign_bundle(bundle, keys["a"][0])
    assert not (bundle / SIGNATURE_FILE).exists()


# --- each way a signature check fails --------------------------------------------
def test_unsigned_bundle_with_trusted_keys(bundle, keys, capsys):
    pub = keys["a"][1]
    with pytest.raises(BundleUnsignedError, match="bowrt sign"):
        Encoder(bundle, threads=1, trusted_keys=[pub])
    rc, _, err = _run(capsys, "verify", bundle, "--public-key", pub)
    assert rc == 1 and SIGNATURE_FILE in _one_line_error(err)
    Encoder(bundle, threads=1)  # no trusted keys: an unsigned bundle loads as before
    Encoder(bundle, threads=1, trusted_keys=None)


def test_signed_by_another_key(bundle, keys):
    signing.sign_bundle(bundle, keys["a"][0])
    with pytest.raises(BundleSignatureError, match="not signed by a trusted key") as e:
        Encoder(bundle, threads=1, trusted_keys=[keys["b"][1]])
    assert not isinstance(e.value, BundleUnsignedError) and _kid(keys["a"][1]) in str(e.value)


def test_two_signers_either_key_is_accepted(bundle, keys):
    (ka, pa), (kb, pb) = keys["a"], keys["b"]
    signing.sign_bundle(bundle, ka)
    signing.sign_bundle(bundle, kb)
    signing.sign_bundle(bundle, ka)  # again: replaces a's entry, adds none
    doc = json.loads((bundle / SIGNATURE_FILE).read_text())
    assert [e["key_id"] for e in doc["signatures"]] == [_kid(pa), _kid(pb)]
    assert signing.check_signature(bundle, [pa])[1] == _kid(pa)
    assert signing.check_signature(bundle, [pb])[1] == _kid(pb)
    assert signing.check_signature(bundle, [keys["b"][1], pa])[1] == _kid(pb)
    Encoder(bundle, threads=1, trusted_keys=[pb])


def test_a_stale_signature_beside_a_valid_one(bundle, keys):
    """a signed, the manifest was changed, b signed the new one: b's key proves it, a's alone does not."""
    (ka, pa), (kb, pb) = keys["a"], keys["b"]
    signing.sign_bundle(bundle, ka)
    _rewrite_weights(bundle)
    signing.sign_bundle(bundle, kb)
    with pytest.raises(BundleSignatureError, match="does not match"):
        signing.check_signature(bundle, [pa])
    assert signing.check_signature(bundle, [pa, pb])[1] == _kid(pb)


def _sig_doc(kid: str, **change) -> str:
    doc = {"format": "bowrt-signature", "version": 1, "algorithm": "ed25519",
           "signatures": [{"key_id": kid, "signature": base64.b64encode(b"\0" * 64).decode()}]}
    return json.dumps({**doc, **change})


@pytest.mark.parametrize("contents", [
    "not json {", "[]", "{}",
    lambda kid: _sig_doc(kid, format="something-else"),
    lambda kid: _sig_doc(kid, version=2),
    lambda kid: _sig_doc(kid, algorithm="rsa"),
    lambda kid: _sig_doc(kid, signatures={"key_id": kid}),
    lambda kid: _sig_doc(kid, signatures=[{"key_id": kid}]),
    lambda kid: _sig_doc(kid, signatures=[{"key_id": kid, "signature": "not base64!"}]),
    lambda kid: _sig_doc(kid, signatures=[{"key_id": kid, "signature": base64.b64encode(b"short").decode()}]),
    lambda kid: _sig_doc(kid),  # well formed, 64 zero bytes: a signature that does not verify
], ids=["text", "list", "empty", "format", "version", "algorithm", "not-a-list", "no-signature", "not-base64",
        "short", "zeros"])
def test_malformed_signature_file(bundle, keys, contents, capsys):
    pub = keys["a"][1]
    text = contents(_kid(pub)) if callable(contents) else contents
    (bundle / SIGNATURE_FILE).write_text(text)
    with pytest.raises(BundleSignatureError) as e:
        Encoder(bundle, threads=1, trusted_keys=[pub])
    assert not isinstance(e.value, BundleUnsignedError)
    rc, _, err = _run(capsys, "verify", bundle, "--public-key", pub)
    line = _one_line_error(err)
    assert rc == 1 and (f"{SIGNATURE_FILE}' is malformed" in line or "does not match its signature" in line), line
    if text == _sig_doc(_kid(pub)):  # well formed: signing again replaces the bad entry, and then it verifies
        signing.sign_bundle(bundle, keys["a"][0])
        assert signing.check_signature(bundle, [pub])[1] == _kid(pub)
    else:  # a malformed file is never overwritten by a new signature
        with pytest.raises(BundleSignatureError, match="malformed"):
            signing.sign_bundle(bundle, keys["a"][0])
        assert (bundle / SIGNATURE_FILE).read_text() == text


# --- bad keys: SigningKeyError, an OptionError --------------------------------------
def test_bad_key_files(bundle, keys, tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key, pub = keys["a"]
    (tmp_path / "junk.pem").write_text("hello\n")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pub").write_bytes(ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "locked").write_bytes(serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    signing.sign_bundle(bundle, key)
    for trusted, words in [([tmp_path / "missing.pub"], "cannot read"), ([tmp_path / "junk.pem"], "not a PEM public"),
                           ([key], "private key: pass its .pub"), ([tmp_path / "ec.pub"], "not an Ed25519"),
                           ([], "non-empty"), ([42], "PEM bytes"), ([b"-----BEGIN PUBLIC KEY-----\n"], "bytes")]:
        with pytest.raises(SigningKeyError, match=words) as e:
            Encoder(bundle, threads=1, trusted_keys=trusted)
        assert isinstance(e.value, OptionError) and not isinstance(e.value, BundleError)
    for private, words in [(pub, "public key: sign with"), (tmp_path / "locked", "encrypted"),
                           (tmp_path / "missing", "cannot read")]:
        with pytest.raises(SigningKeyError, match=words):
            signing.sign_bundle(bundle, private)
    rc, _, err = _run(capsys, "sign", bundle, "--key", tmp_path / "junk.pem")
    assert rc == 1 and "junk.pem" in _one_line_error(err)
    rc, _, err = _run(capsys, "verify", bundle, "--public-key", tmp_path / "ec.pub")
    assert rc == 1 and "Ed25519" in _one_line_error(err)


# --- the extra ---------------------------------------------------------------------
def test_without_cryptography_the_error_is_one_line(bundle, keys, monkeypatch, capsys):
    real = builtins.__import__

    def no_cryptography(name, *args, **kwargs):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cryptography)
    pub = keys["a"][1]
    with pytest.raises(MissingExtraError) as e:
        signing.load_public_keys([pub])
    assert str(e.value) == "signature checks need the sign extra: pip install 'bowrt[sign]'"
    assert isinstance(e.value, ImportError)
    with pytest.raises(MissingExtraError):
        Encoder(bundle, threads=1, trusted_keys=[pub])
    for argv in (["verify", bundle, "--public-key", pub], ["keygen", bundle.parent / "k"],
                 ["sign", bundle, "--key", keys["a"][0]]):
        rc, _, err = _run(capsys, *argv)
        assert rc == 1 and _one_line_error(err) == "bowrt: error: " + str(e.value), argv
    assert _run(capsys, "verify", bundle)[0] == 0  # without --public-key nothing needs it
    Encoder(bundle, threads=1)


def test_the_runtime_and_plain_verify_never_import_cryptography(bundle):
    code = ("import sys; import bowrt.runtime, bowrt.bundle, bowrt.signing; from bowrt.cli import main; "
            "rc = main(['verify', sys.argv[1]]); assert 'cryptography' not in sys.modules, 'imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# --- the loading commands, and the hub ----------------------------------------------
def test_encode_takes_public_key(bundle, keys, tmp_path, capsys):
    args = build_parser().parse_args(["encode", "b", "in.tsv", "-o", "out", "--public-key", "x", "--public-key", "y"])
    assert args.public_key == ["x", "y"]
    assert build_parser().parse_args(["encode", "b", "in.tsv", "-o", "out"]).public_key is None
    src = tmp_path / "c.tsv"
    src.write_text("id\ttext\ttitle\n1\tThe wall fell.\tBerlin\n")
    argv = ["encode", bundle, src, "--threads", "1", "--no-progress", "--public-key", keys["a"][1]]
    rc, _, err = _run(capsys, *argv, "-o", tmp_path / "out1")
    assert rc == 1 and SIGNATURE_FILE in _one_line_error(err) and not (tmp_path / "out1").exists()
    signing.sign_bundle(bundle, keys["a"][0])
    rc, out, err = _run(capsys, *argv, "-o", tmp_path / "out2")
    assert rc == 0 and "1 vectors in 1 shards" in out, err


def test_serve_takes_public_key(bundle, keys, monkeypatch, capsys):
    pytest.importorskip("fastapi")
    from bowrt.serve import app as serve_app

    served = []
    monkeypatch.setattr(serve_app, "serve", lambda encoder, config, **kw: served.append(encoder))
    assert build_parser().parse_args(["serve", "b", "--public-key", "x"]).public_key == ["x"]
    rc, _, err = _run(capsys, "serve", bundle, "--threads", "1", "--public-key", keys["a"][1])
    assert rc == 1 and SIGNATURE_FILE in _one_line_error(err) and served == []  # refused before serving
    signing.sign_bundle(bundle, keys["b"][0])
    rc, _, err = _run(capsys, "serve", bundle, "--threads", "1", "--public-key", keys["a"][1])
    assert rc == 1 and "not signed by a trusted key" in _one_line_error(err) and served == []
    rc, _, err = _run(capsys, "serve", bundle, "--threads", "1", "--public-key", keys["a"][1], "--public-key",
                      keys["b"][1])
    assert rc == 0 and len(served) == 1 and Path(served[0].bundle_dir).resolve() == bundle.resolve(), err


def test_the_hub_carries_the_signature_and_from_pretrained_checks_it(bundle, keys, tmp_path, monkeypatch):
    hf = pytest.importorskip("huggingface_hub")
    from bowrt.runtime.hub import push_bundle
    from tests.test_hub import FakeApi, bundle_files, populate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HfApi", FakeApi)
    monkeypatch.setattr(FakeApi, "calls", [])
    cache = tmp_path / "hub"
    populate(cache, "org/unsigned", bundle_files(bundle))
    push_bundle(bundle, "org/unsigned")
    signing.sign_bundle(bundle, keys["a"][0])
    push_bundle(bundle, "org/signed")  # the signature goes up with the bundle, only where there is one
    uploads = [call[1]["allow_patterns"] for call in FakeApi.calls if call[0] == "upload_folder"]
    assert [SIGNATURE_FILE in patterns for patterns in uploads] == [False, True]
    populate(cache, "org/signed", bundle_files(bundle))
    pub = keys["a"][1]
    asked, real = [], hf.snapshot_download
    monkeypatch.setattr(hf, "snapshot_download", lambda **kw: asked.append(kw["allow_patterns"]) or real(**kw))
    enc = Encoder.from_pretrained("org/signed", cache_dir=cache, threads=1, trusted_keys=[pub])
    assert (Path(enc.bundle_dir) / SIGNATURE_FILE).is_file() and SIGNATURE_FILE in asked[-1]  # fetched online too
    with pytest.raises(BundleUnsignedError):
        Encoder.from_pretrained("org/unsigned", cache_dir=cache, threads=1, trusted_keys=[pub])
    with pytest.raises(BundleSignatureError):
        Encoder.from_pretrained("org/signed", cache_dir=cache, threads=1, trusted_keys=[keys["b"][1]])
