"""Do `bowrt serve`'s defaults hold up on this CPU? The documented concurrency example, measured.

Answer: docs/serving.md, "`bowrt serve`" ("The defaults on a CPU host, measured").

    python benchmarks/studies/serve_defaults.py --bundle bundles/twin/fp32 [--clients 10] [--inputs 64] [--tokens 250]
                                        [--request-timeout S] [--max-queue N] [--max-inputs N]

Starts `bowrt serve` (a subprocess, the server's defaults unless flags are given), then
`--clients` threads each POST /embed once, at the same moment, with `--inputs` passages of
`--tokens` tokens (seeded texts of exact token counts, benchmarks/harness/workloads.py). Prints each
request's status and latency, the number of 5xx answers (an OpenAI client retries those, which
adds load) and the worst latency. The example of docs/serving.md is 10 clients x 64 passages
of ~250 tokens; a CPU host's defaults must answer all of them with 200.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.harness.workloads import TextMaker  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bowrt serve exited {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("bowrt serve did not become ready")


def post(port: int, body: bytes, out: list, k: int, start: threading.Barrier) -> None:
    start.wait()
    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
        conn.request("POST", "/embed", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except OSError as e:
        status = f"{type(e).__name__}"
    out[k] = (status, time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=250)
    ap.add_argument("--serve-flag", action="append", default=[], metavar="FLAG=VALUE",
                    help="passed to bowrt serve as --FLAG VALUE (e.g. request-timeout=120)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    texts = TextMaker(Path(args.bundle) / "tokenizer.json").texts([args.tokens] * args.inputs)
    body = json.dumps({"inputs": texts, "kind": "passage"}).encode()
    port = free_port()
    flags = [x for f in args.serve_flag for x in (f"--{f.split('=', 1)[0]}", f.split("=", 1)[1])]
    cmd = [sys.executable, "-m", "bowrt.cli", "serve", args.bundle, "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        wait_ready(port, proc)
        out: list = [None] * args.clients
        start = threading.Barrier(args.clients)
        threads = [threading.Thread(target=post, args=(port, body, out, k, start)) for k in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(60)
    for k, (status, s) in enumerate(sorted(out, key=lambda x: x[1])):
        print(f"request {k + 1:2d}: {status} in {s:6.1f} s")
    bad = [s for s, _ in out if s != 200]
    worst = max(s for _, s in out)
    print(f"{args.clients} clients x {args.inputs} passages of {args.tokens} tokens, serve flags {flags or 'defaults'}: "
          f"{len(out) - len(bad)} x 200, {len(bad)} other ({bad}), worst {worst:.1f} s, wall {wall:.1f} s, "
          f"{args.clients * args.inputs / wall:.1f} passages/s")
    if args.json:
        args.json.write_text(json.dumps({"flags": flags, "results": out, "wall_s": wall}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
