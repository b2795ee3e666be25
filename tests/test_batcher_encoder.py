"""The dynamic batcher in front of a real Encoder (issue 4 acceptance)."""

from __future__ import annotations

import asyncio
import random
import threading

import numpy as np
import pytest

from bowrt import Encoder
from bowrt.errors import InputTypeError, OptionError
from bowrt.export.probes import load_text_set
from tests.tolerances import SAME_BUNDLE_ATOL


@pytest.fixture(scope="module")
def enc(tiny_bundles):
    return Encoder(tiny_bundles["fp32"])


def requests(n: int, seed: int) -> list[list[str]]:
    probes = load_text_set("probes")
    texts = list(probes.queries) + [t for _, t in probes.passages]
    rng = random.Random(seed)
    return [[rng.choice(texts)[: rng.randint(1, 600)] for _ in range(rng.randint(1, 4))] for _ in range(n)]


@pytest.mark.timeout(300)
def test_32_threads_match_direct_encode(enc):
    per_thread = [requests(100, seed) for seed in range(32)]
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []
    with enc.batcher("passage", max_wait_ms=2) as batcher:
        def worker(t: int) -> None:
            try:
                for i, items in enumerate(per_thread[t]):
                    results[(t, i)] = batcher.encode(items, timeout=120)
            except BaseException as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(32)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=240)
        stats = batcher.stats()
    assert not errors
    assert len(results) == 32 * 100  # none lost
    for (t, i), got in results.items():
        want = enc.encode_passages(per_thread[t][i])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=SAME_BUNDLE_ATOL, rtol=0)
    assert stats.requests == 3200 and stats.batches < 3200


@pytest.mark.timeout(120)
def test_asyncio_200_tasks(enc):
    reqs = requests(200, seed=99)

    async def main(batcher):
        return await asyncio.gather(*(batcher.aencode(r, timeout=60) for r in reqs))

    with enc.batcher("query") as batcher:
        got = asyncio.run(main(batcher))
    for items, vecs in zip(reqs, got):
        np.testing.assert_allclose(vecs, enc.encode_queries(items), atol=SAME_BUNDLE_ATOL, rtol=0)


def test_bad_item_rejected_before_batching(enc):
    with enc.batcher("query") as batcher:
        good = batcher.submit(["fine"])
        with pytest.raises(InputTypeError, match=r"queries\[1\]"):
            batcher.submit(["ok", None])
        assert good.result(timeout=30).shape == (1, enc.dim)


def test_unknown_kind(enc):
    with pytest.raises(OptionError, match="query, passage"):
        enc.batcher("document")
