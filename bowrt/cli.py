"""The ``bowrt`` command.

    bowrt export [MODEL] -o bundles/            torch -> ONNX bundles, one per variant (export extra)
    bowrt verify bundles/fp32                   manifest + sha256 of every file (base install only)
    bowrt keygen KEY; bowrt sign BUNDLE --key KEY   Ed25519-sign a manifest (--public-key PUB to check it)
    bowrt info bundles/fp32                     what a bundle holds: dims, pooling, lengths, parity
    bowrt encode bundles/fp32 corpus.tsv -o vecs/   a corpus -> sharded .npy, resumable (--ray: on Ray)
    bowrt serve bundles/fp32 --port 8080        HTTP server (serve extra)
    bowrt export-triton bundles/fp16 -o model_repository/ --kind gpu   (Triton model repository)
    bowrt eval bundles/fp32 bundles/int8 --data my-set/ -o eval/   retrieval quality on a labelled set
    bowrt bench ...                             says how to run the benchmarks (python -m benchmarks)

Each handler imports what it needs, so ``bowrt verify`` works with the base
install alone. Exit status: 0 success; 1 failure, reported as one line
``bowrt: error: ...`` on stderr (no traceback) for any bowrt error or missing
extra, or a ``bowrt: warning: ...`` after the output of ``bowrt info`` on a bundle
that fails its checksums, or a closed output pipe (quietly); 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bowrt.bundle import KINDS
from bowrt.errors import BowrtError, OptionError
from bowrt.options import parse_providers as _providers
from bowrt.trust_cli import add_parsers as _add_trust  # verify, keygen, sign
from bowrt.trust_cli import add_public_key


def _say(msg: str) -> None:
    print(msg, flush=True)


# --- handlers ------------------------------------------------------------------
def _export(args: argparse.Namespace) -> int:
    from bowrt.export import export_model

    manifests = export_model(
        args.model, args.out, args.variants, force=args.force, revision=args.revision, pooling=args.pooling,
        query_max_length=args.query_max_length, passage_max_length=args.passage_max_length, gates=args.gate,
        int8_method=args.int8_method, int8_profile=args.int8_profile, int8_embeddings=args.int8_embeddings, eval_data=args.eval,
        eval_max_drop=args.eval_max_drop, log=_say,
        **({} if args.int8_static_tolerance is None else {"int8_static_tolerance": args.int8_static_tolerance}),
    )
    for variant in manifests:
        _say(f"bundle {variant}: {Path(args.out) / variant}")
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _info(args: argparse.Namespace) -> int:
    import json

    from bowrt.bundle import read_manifest, verify_bundle
    from bowrt.errors import BundleError

    m = read_manifest(args.bundle)
    try:
        verify_bundle(args.bundle)
        broken = None
    except BundleError as e:  # still describe it: that is what info is for
        broken = f"bowrt: warning: {args.bundle}: {' '.join(str(e).split())} (the checksum check failed)"
    if args.json:
        _say(json.dumps(m.to_json(), indent=2))
    else:
        _info_table(args, m)
    if broken:
        print(broken, file=sys.stderr, flush=True)
        return 1
    return 0


def _info_table(args: argparse.Namespace, m: Any) -> None:
    rows = [
        ("bundle", str(args.bundle)),
        ("model", m.source_model + (f" @ {m.source_revision}" if m.source_revision else "")),
        ("variant", m.variant + (f" ({method})" if (method := (m.quantization or {}).get("method", m.variant)) != m.variant else "")),
        ("dims", f"{m.hidden_size}" + (f" ({m.num_layers} layers, {m.num_heads} heads)" if m.num_layers else "")),
        ("pooling", f"{m.pooling}; normalize {'yes' if m.normalize else 'no'}; similarity {m.similarity}"),
        ("lengths", f"query {m.text.query_max_length}, passage {m.text.passage_max_length} tokens"),
        ("passages", f"{m.text.passage_format!r} (title and text, one segment)"),
        ("inputs", ", ".join(f"{t.name} {t.dtype} {list(t.shape)}" for t in m.inputs)),
        ("output", ", ".join(f"{t.name} {t.dtype} {list(t.shape)}" for t in m.outputs)),
        ("opset", str(m.opset)),
    ]
    parity = m.parity or {}
    if parity.get("metrics"):
        rows.append(("parity", ", ".join(f"{k} {_fmt(v)}" for k, v in parity["metrics"].items())))
        rows.append(("  against", str(parity.get("reference", "?"))))
    if parity.get("gates"):
        rows.append(("gates", ", ".join(f"{k} {_fmt(v)}" for k, v in parity["gates"].items())))
    if parity.get("host"):
        rows.append(("  measured", f"on int8 ISA {parity['host'].get('int8_isa', '?')} ({parity['host'].get('machine', '?')})"))
    rows.extend(_host_rows(m))
    tools = ", ".join(f"{k} {v}" for k, v in m.tools.items() if k in ("bowrt", "torch", "transformers", "onnxruntime"))
    rows.append(("created", f"{m.created or '?'}" + (f" ({tools})" if tools else "")))
    rows.append(("files", ", ".join(f"{n} {e['bytes'] / 1e6:.1f} MB" for n, e in sorted(m.files.items()))))
    for key, value in rows:
        _say(f"{key:<10} {value}")


def _host_rows(m: Any) -> list[tuple[str, str]]:
    """This host's CPU as the int8 kernels see it, and whether the bundle is exact on it."""
    from bowrt.errors import HostUnsupportedError
    from bowrt.runtime import host

    h = host.describe()
    rows = [("host", (f"{h['machine']}, int8 ISA {h['int8_isa']} ({h['isa_source']}), int8 accumulation "
                      f"{h['int8_accumulation']}"))]
    if m.variant == "int8":
        try:
            verdict = f"runs {host.select_graph(m)} here"
        except HostUnsupportedError:
            verdict = "NOT exact on this host: the runtime refuses it here"
        except ImportError:
            verdict = "not checked (onnxruntime is not installed)"
        per_graph = "; ".join(f"{f}: {', '.join(v)}" for f, v in host.graphs(m).items())
        rows.append(("int8", f"exact on {per_graph}; {verdict}"))
    return rows


def _encode(args: argparse.Namespace) -> int:
    from bowrt.corpus import CorpusSettings

    settings = CorpusSettings(kind=args.kind, fmt=args.format, shard_size=args.shard_size, dtype=args.dtype,
                              on_error=args.on_error, overwrite=args.overwrite, progress=not args.no_progress)
    if args.ray:
        from bowrt.scale.ray_encode import encode_corpus_ray
        from bowrt.signing import verify_signed

        verify_signed(args.bundle, args.public_key)  # the driver checks the signature once, before any actor loads
        r = encode_corpus_ray(args.bundle, args.input, args.out, settings, address=args.ray_address,
                              num_actors=args.num_actors, use_gpu=args.gpu, threads_per_actor=args.threads or 1,
                              providers=_providers(args.providers))
    else:
        if args.ray_address or args.num_actors or args.gpu:
            raise OptionError("--ray-address, --num-actors and --gpu apply with --ray only")
        from bowrt.corpus import encode_corpus
        from bowrt.runtime import Encoder

        enc = Encoder(args.bundle, _providers(args.providers), args.threads, trusted_keys=args.public_key)
        r = encode_corpus(enc, args.input, args.out, settings)
    rate = r.encoded / r.seconds if r.seconds > 0 else 0.0
    _say(f"{r.total} vectors in {r.shards} shards -> {r.outdir} ({r.shards_written} written, {r.shards_reused} reused; "
         f"{r.encoded} encoded at {rate:.1f}/s in {r.seconds:.1f} s)")
    if r.rejects:
        print(f"bowrt: warning: {r.rejects} unusable lines set aside in {r.outdir / 'rejects.jsonl'}", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from bowrt.serve.app import ServeConfig, serve

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env, "")
        if not key:
            raise OptionError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    if args.host not in ("127.0.0.1", "localhost", "::1") and key is None:
        print(f"bowrt: warning: listening on {args.host} without an API key (--api-key-env)", file=sys.stderr)
    config = ServeConfig(
        max_inputs=args.max_inputs, max_body_bytes=args.max_body_bytes, request_timeout_s=args.request_timeout,
        max_wait_ms=args.max_wait_ms, max_batch_size=args.max_batch_size, max_batch_tokens=args.max_batch_tokens,
        max_queue=args.max_queue, api_key=key, served_model_name=args.served_model_name,
        accept_token_ids=args.accept_token_ids,
    )
    from bowrt.runtime import Encoder

    encoder = Encoder(args.bundle, _providers(args.providers), args.threads,  # fail here, before binding the port
                      trusted_keys=args.public_key)
    serve(encoder, config, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _export_triton(args: argparse.Namespace) -> int:
    from bowrt.scale.triton import describe, export_triton

    target = export_triton(args.bundle, args.out, args.name, max_batch_size=args.max_batch_size, instances=args.instances,
                           kind=args.kind, max_queue_delay_us=args.max_queue_delay_us, tensorrt=args.tensorrt,
                           force=args.force)
    d = describe(target)
    _say(f"wrote {target}: {d['variant']} model, inputs {', '.join(d['inputs'])} -> {d['output']} [{d['hidden_size']}]")
    for f in d["files"]:
        _say(f"  {f}")
    _say(f"run it with: tritonserver --model-repository {Path(args.out).resolve()}")
    return 0


def _bench(argv: list[str]) -> int:
    # The harness is dev-only (benchmarks/ in the source checkout, not in the wheel): say
    # in one line where it is rather than fail with a traceback.
    print("bowrt bench: the benchmarks are not part of the installed package; from a source checkout "
          "(git clone, then make install) run: python -m benchmarks " + " ".join(argv), file=sys.stderr)
    return 2


# --- the parser ----------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from bowrt import __version__

    p = argparse.ArgumentParser(prog="bowrt", description="Export, verify, run and serve bowdpr dense retriever bundles.")
    p.add_argument("--version", action="version", version=f"bowrt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from bowrt.eval.cli import add_parser as _add_eval

    for add in (_add_export, _add_trust, _add_info, _add_encode, _add_eval, _add_serve, _add_export_triton, _add_bench):
        add(sub)
    _add_push(sub)
    return p


def _add_export(sub: Any) -> None:
    from bowrt.bundle import DEFAULT_MODEL, POOLINGS, VARIANTS

    s = sub.add_parser("export", help="export a Hugging Face model to verified ONNX bundles (export extra)")
    s.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"hub id or local folder (default {DEFAULT_MODEL})")
    s.add_argument("-o", "--out", required=True, help="output folder; one bundle per variant inside")
    s.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: %(default)s")
    s.add_argument("--force", action="store_true", help="replace an existing output folder")
    s.add_argument("--revision", help="hub revision (branch, tag or commit)")
    s.add_argument("--pooling", choices=POOLINGS, help="override the pooling (default: from the model, cls for bowdpr)")
    s.add_argument("--query-max-length", type=int, metavar="N")
    s.add_argument("--passage-max-length", type=int, metavar="N")
    s.add_argument("--gate", action="append", metavar="VARIANT.METRIC=VALUE", help="override a parity gate (repeatable)")
    s.add_argument("--int8-method", choices=["smoothquant", "dynamic"], default="smoothquant",
                   help="smoothquant: bowrt's batch-invariant per-token int8 (default); "
                        "dynamic: ONNX Runtime's standard dynamic int8, the baseline")
    s.add_argument("--int8-profile", choices=["default", "speed"], default="default",
                   help="smoothquant: default (per-token scales, the closest to fp32) or speed (one calibrated "
                        "scale per node wherever the calibration texts keep min cosine 0.99 and overlap@10 0.96: "
                        "faster, less faithful; docs/int8.md)")
    s.add_argument("--int8-static-tolerance", type=float, default=None, metavar="X",
                   help="smoothquant: give a node one calibrated activation scale (faster than per-token) when "
                        "its simulated error is at most X times the per-token one (default: the profile's, 1.0 "
                        "(only where that costs no accuracy) or, for speed, every node)")
    s.add_argument("--int8-embeddings", choices=["int8", "fp32"], default="int8",
                   help="int8: the word-embedding table as int8 with one scale per row, a quarter of its fp32 "
                        "bytes (default); fp32: as it is")
    s.add_argument("--eval", metavar="DIR", help="a labelled set (BEIR or DPR layout, as bowrt eval reads it): refuse "
                                                 "the int8 bundle where its Recall@20 drops by more than --eval-max-drop")
    s.add_argument("--eval-max-drop", type=float, default=0.5, metavar="POINTS",
                   help="the most Recall@20 (top-20 accuracy for DPR) int8 may lose against fp32 (default %(default)s)")
    s.set_defaults(handler=_export)


def _add_info(sub: Any) -> None:
    s = sub.add_parser("info", help="summarize a bundle: variant, dims, pooling, lengths, parity",
                       description="Summarize a bundle. Its files are checked against the manifest's sha256 "
                                   "too: on a mismatch or a missing file info still prints what the manifest "
                                   "says, then a 'bowrt: warning: ... checksum ...' line on stderr, and exits 1.")
    s.add_argument("bundle")
    s.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    s.set_defaults(handler=_info)


def _add_encode(sub: Any) -> None:
    s = sub.add_parser("encode", help="encode a corpus file into sharded .npy files (resumable)")
    s.add_argument("bundle")
    s.add_argument("input", help="JSONL (id, text, title), TSV (id, text, title; DPR psgs_w100) or plain lines")
    s.add_argument("-o", "--out", required=True, help="output folder (rerun with the same folder to resume)")
    s.add_argument("--kind", choices=KINDS, default="passage")
    s.add_argument("--format", choices=("auto", "jsonl", "tsv", "lines"), default="auto")
    s.add_argument("--shard-size", type=int, default=50_000, metavar="N", help="vectors per shard (default %(default)s)")
    s.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    s.add_argument("--on-error", choices=("skip", "stop"), default="skip",
                   help="skip: bad lines go to rejects.jsonl; stop: fail at the first one")
    s.add_argument("--overwrite", action="store_true", help="replace an output folder holding a job with other settings")
    s.add_argument("--providers", help="cpu, cuda, tensorrt, or a comma-separated preference list")
    s.add_argument("--threads", type=int, metavar="N", help="ORT threads (per actor with --ray)")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--ray", action="store_true", help="encode on a Ray cluster (scale extra)")
    s.add_argument("--ray-address", metavar="ADDR", help="Ray cluster address (default: start or join a local one)")
    s.add_argument("--num-actors", type=int, metavar="N", help="Encoder actors (default: one per CPU slot or GPU)")
    s.add_argument("--gpu", action="store_true", help="with --ray: one GPU per actor")
    add_public_key(s)
    s.set_defaults(handler=_encode)


def _add_serve(sub: Any) -> None:
    s = sub.add_parser("serve", help="serve a bundle over HTTP (serve extra)")
    s.add_argument("bundle")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s: this machine only)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--api-key-env", metavar="VAR", help="require 'Authorization: Bearer $VAR' (except on /health)")
    s.add_argument("--max-inputs", type=int, default=256, metavar="N", help="texts per request (default %(default)s)")
    s.add_argument("--max-body-bytes", type=int, default=2 * 1024 * 1024, metavar="N", help="default %(default)s")
    # The defaults here are ServeConfig's (bowrt/serve/app.py, where they are measured), written
    # out because importing it would load fastapi for every command; tests/test_cli.py checks.
    s.add_argument("--request-timeout", type=float, default=300.0, metavar="S",
                   help="seconds a request may wait for its first batch, then 504 (default %(default)s)")
    # 0.0 = bowrt.runtime.batcher.DEFAULT_MAX_WAIT_MS, written out: importing it here would load
    # onnxruntime and numpy for every command, and `bowrt verify` must run without them.
    s.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="how long a batch waits for more requests; 0: run as soon as the worker is free "
                        "(requests still merge while a batch computes) (default %(default)s)")
    s.add_argument("--max-batch-size", type=int, default=64, metavar="N", help="rows per batch (default %(default)s)")
    s.add_argument("--max-batch-tokens", type=int, metavar="N", help="padded tokens per batch (default: the Encoder's)")
    s.add_argument("--max-queue", type=int, default=256, metavar="N", help="pending requests per kind before 429")
    s.add_argument("--served-model-name", metavar="NAME",
                   help="the model name OpenAI clients send and get back (also NAME:query, NAME:passage; "
                        "default: the bundle's source model id, the last folder name where it is a path)")
    s.add_argument("--accept-token-ids", action="store_true",
                   help="take OpenAI token arrays as ids of this model's vocabulary (off: refused, since "
                        "LangChain's default sends tiktoken ids, which would give wrong vectors)")
    s.add_argument("--providers", help="cpu, cuda, tensorrt, or a comma-separated preference list")
    s.add_argument("--threads", type=int, metavar="N", help="ORT intra-op threads")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add_public_key(s)
    s.set_defaults(handler=_serve)


def _add_export_triton(sub: Any) -> None:
    s = sub.add_parser("export-triton", help="write a Triton model repository for a bundle")
    s.add_argument("bundle")
    s.add_argument("-o", "--out", required=True, help="the model repository folder")
    s.add_argument("--name", help="model name (default bowrt_<variant>)")
    s.add_argument("--max-batch-size", type=int, default=64, metavar="N")
    s.add_argument("--instances", type=int, default=1, metavar="N")
    s.add_argument("--kind", choices=("cpu", "gpu"), default="cpu")
    s.add_argument("--max-queue-delay-us", type=int, default=2000, metavar="US")
    s.add_argument("--tensorrt", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorRT accelerator (default: on for gpu with fp32/fp16 bundles)")
    s.add_argument("--force", action="store_true", help="replace an existing model folder")
    s.set_defaults(handler=_export_triton)


def _add_bench(sub: Any) -> None:
    sub.add_parser("bench", help="how to run the benchmark suite (python -m benchmarks, from a source checkout)",
                   add_help=False)


def _push(args: argparse.Namespace) -> int:
    from bowrt.runtime.hub import push_bundle

    url = push_bundle(args.bundle, args.repo_id, path_in_repo=args.path_in_repo, revision=args.revision,
                      private=True if args.private else None, commit_message=args.message)
    _say(f"pushed {args.bundle} to {args.repo_id}{'/' + args.path_in_repo if args.path_in_repo else ''}: {url}")
    return 0


def _add_push(sub: Any) -> None:
    s = sub.add_parser("push", help="verify a bundle, then upload exactly its files to a Hugging Face Hub repo")
    s.add_argument("bundle")
    s.add_argument("repo_id", help="org/name; created if missing (log in first: hf auth login, or set HF_TOKEN)")
    s.add_argument("--path-in-repo", metavar="DIR", help="upload into this folder of the repo (e.g. int8)")
    s.add_argument("--revision", help="branch to commit to (default main)")
    s.add_argument("--private", action="store_true", help="create the repo private (an existing one keeps its setting)")
    s.add_argument("--message", help="commit message")
    s.set_defaults(handler=_push)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # dev-only: python -m benchmarks
        return _bench(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader went away (`bowrt info ... | head -1`): no traceback. Python's own advice
        # (docs: signal, "Note on SIGPIPE"): point stdout at devnull so that the flush at exit
        # does not fail again, and exit 1.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (BowrtError, ImportError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"bowrt: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bowrt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
