"""The commands that say whether a bundle can be trusted (``bowrt.cli`` adds them to ``bowrt``).

    bowrt verify BUNDLE [--public-key PUB ...] [--numerics]   checksums, signature, numerics on this host
    bowrt keygen KEY [--force]                                 a new Ed25519 key: KEY (private) and KEY.pub
    bowrt sign BUNDLE --key KEY                                add KEY's signature to BUNDLE/manifest.sig

``bowrt verify`` without ``--public-key`` needs the base install only; the signature
checks and the key commands need the ``sign`` extra (``bowrt/signing.py``). The
loading commands (``encode``, ``serve``) take the same ``--public-key``
(:func:`add_public_key`) and pass it to the Encoder as ``trusted_keys``.
"""

from __future__ import annotations

import argparse
from typing import Any

from bowrt.bundle import MANIFEST
from bowrt.errors import OptionError


def _say(msg: str) -> None:
    print(msg, flush=True)


def add_public_key(s: argparse.ArgumentParser) -> None:
    """``--public-key PUB`` (repeatable): refuse the bundle unless one of these keys signed it."""
    s.add_argument("--public-key", action="append", metavar="PUB",
                   help="an Ed25519 public key (PEM, from bowrt keygen) the bundle must be signed by; repeatable: "
                        "any one of them will do (sign extra). Without it the signature is not checked")


def _verify(args: argparse.Namespace) -> int:
    from bowrt.signing import verify_signed

    m, signer = verify_signed(args.bundle, args.public_key)  # verify_bundle alone without --public-key
    rev = f" @ {m.source_revision}" if m.source_revision else ""
    _say(f"OK {args.bundle}: {m.variant} bundle of {m.source_model}{rev}")
    for name, entry in sorted(m.files.items()):
        _say(f"  sha256 OK  {name}  ({entry['bytes']} bytes)")
    if signer:
        _say(f"  signature OK  {MANIFEST}  (signed by trusted key {signer})")
    if args.numerics:
        from bowrt.runtime import Encoder, host

        # raises NumericsError / HostUnsupportedError on a miss
        r = Encoder(args.bundle, "cpu", trusted_keys=args.public_key, check_numerics="always").numerics or {}
        if not r.get("checked"):
            raise OptionError(f"--numerics: {r.get('reason', 'no self-check data in this bundle')}")
        host_part = ("" if r["min_cosine_vs_export_host"] is None else
                     f", vs the export host {r['min_cosine_vs_export_host']:.6f} (>= {r['host_gate']})")
        _say(f"  numerics OK on this host ({host.summary()}): {r['texts']} texts, min cosine vs PyTorch "
             f"{r['min_cosine_vs_pytorch']:.6f} (gate {r['gate']}){host_part}, {r['seconds'] * 1e3:.0f} ms")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from bowrt.signing import generate_keypair, load_public_keys

    key, pub = generate_keypair(args.key, force=args.force)
    ((kid, _),) = load_public_keys([pub])
    _say(f"private key: {key}  (keep it secret: whoever reads it can sign bundles your users trust)")
    _say(f"public key:  {pub}  (key id {kid}; give it to whoever loads your bundles: --public-key {pub})")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from bowrt.bundle import SIGNATURE_FILE
    from bowrt.signing import sign_bundle

    kid = sign_bundle(args.bundle, args.key)
    _say(f"signed {args.bundle}/{MANIFEST} with key {kid}: {args.bundle}/{SIGNATURE_FILE}")
    return 0


def add_parsers(sub: Any) -> None:
    """``verify``, ``keygen`` and ``sign``."""
    s = sub.add_parser("verify", help="check a bundle's manifest and the sha256 of every file (and its signature)")
    s.add_argument("bundle")
    add_public_key(s)
    s.add_argument("--numerics", action="store_true",
                   help="also encode the bundle's self-check texts on this host and compare them with its reference "
                        "vectors (needs onnxruntime; exits 1 naming the host's ISA on a miss)")
    s.set_defaults(handler=_verify)
    s = sub.add_parser("keygen", help="write a new Ed25519 signing key KEY and its public key KEY.pub (sign extra)")
    s.add_argument("key", metavar="KEY")
    s.add_argument("--force", action="store_true", help="replace existing KEY / KEY.pub files")
    s.set_defaults(handler=_keygen)
    s = sub.add_parser("sign", help="verify a bundle, then sign its manifest into manifest.sig (sign extra)")
    s.add_argument("bundle")
    s.add_argument("--key", required=True, metavar="KEY", help="the private key (PEM, from bowrt keygen)")
    s.set_defaults(handler=_sign)
