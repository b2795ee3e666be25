"""Do bowrt int8's two speeds follow the host's core-to-core latency?

Answer: docs/benchmarks.md, "What the two speeds are: the host's core-to-core latency".

    python benchmarks/studies/core_latency.py INT8_BUNDLE [--passes 16] [--passages 40]
        [--min-tokens 129] [--threads 2]

A small C program (the source is below; built with the host's ``cc`` into a temporary
folder) bounces one cache line between two threads pinned to CPUs 0 and 1 and prints the
round trip in ns. Each pass: the round trip, then the same passages (token ids of
``--min-tokens`` to 256, batched as the runtime batches them) through the bundle's graph
one batch at a time on ``--threads`` threads (ORT's intra-op threads share every
operator's data), then through Encoder lanes (``batch_lanes``: each batch on one thread,
nothing shared), then the round trip again. Needs a C compiler and two CPUs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/studies/NAME.py`
    import _checkout  # noqa: F401  (the checkout root on sys.path)

from benchmarks.studies.common import token_corpus  # noqa: E402
from bowrt.runtime.encoder import Encoder  # noqa: E402
from bowrt.runtime.tokenize import Tokens  # noqa: E402

PING_PONG_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static _Alignas(64) atomic_int flag;
static int n;
static void pin(int cpu) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s); pthread_setaffinity_np(pthread_self(), sizeof s, &s); }
static void *pong(void *arg) {
    (void)arg; pin(1);
    for (int i = 0; i < n; i++) {
        while (atomic_load_explicit(&flag, memory_order_acquire) != 1) {}
        atomic_store_explicit(&flag, 0, memory_order_release);
    }
    return 0;
}
int main(int argc, char **argv) {
    n = argc > 1 ? atoi(argv[1]) : 100000;
    pin(0);
    pthread_t t; pthread_create(&t, 0, pong, 0);
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        atomic_store_explicit(&flag, 1, memory_order_release);
        while (atomic_load_explicit(&flag, memory_order_acquire) != 0) {}
    }
    clock_gettime(CLOCK_MONOTONIC, &b); pthread_join(t, 0);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""


def build_ping_pong(folder: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("core_latency needs a C compiler (cc or gcc) on PATH")
    src, exe = folder / "ping_pong.c", folder / "ping_pong"
    src.write_text(PING_PONG_C)
    subprocess.run([cc, "-O2", "-pthread", "-o", str(exe), str(src)], check=True)
    return exe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--passes", type=int, default=16)
    ap.add_argument("--passages", type=int, default=40)
    ap.add_argument("--min-tokens", type=int, default=129)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rows = [r for r in token_corpus(40 * args.passages, np.random.default_rng(0)) if len(r) >= args.min_tokens]
    call = Tokens("passage", tuple(rows[: args.passages]))
    one = Encoder(args.bundle, threads=args.threads, batch_lanes=1, check_numerics=False)
    lanes = Encoder(args.bundle, threads=args.threads, batch_lanes=args.threads, check_numerics=False)
    one.encode_tokens(call)
    lanes.encode_tokens(call)
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_ping_pong(Path(tmp))

        def round_trip() -> float:
            return float(subprocess.run([str(exe), "100000"], capture_output=True, text=True, check=True).stdout)

        def rate(enc: Encoder) -> float:
            time.sleep(0.1)
            t0 = time.perf_counter()
            enc.encode_tokens(call)
            return len(call) / (time.perf_counter() - t0)

        rows_out = []
        for p in range(args.passes):
            before, r1, r2, after = round_trip(), rate(one), rate(lanes), round_trip()
            rows_out.append((max(before, after), r1, r2))
            print(f"pass {p + 1:2d}: round trip {before:5.0f} ns | one at a time {r1:5.1f} passages/s | "
                  f"lanes {r2:5.1f} | round trip {after:5.0f} ns", flush=True)
    arr = np.array(rows_out)
    near = arr[:, 0] < 2 * arr[:, 0].min()
    for label, sel in (("near (round trip < 2x the least)", near), ("far", ~near)):
        if sel.any():
            print(f"{label}: {sel.sum()} passes, one at a time median {np.median(arr[sel, 1]):.1f}, "
                  f"lanes median {np.median(arr[sel, 2]):.1f} passages/s")


if __name__ == "__main__":
    main()
