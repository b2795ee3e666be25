"""The server's metrics, in Prometheus text format, written by hand (no extra dependency):
requests by route and status, queue and batch gauges and counters from each batcher's
stats, and histograms of tokenize, queue and inference time and of batch size."""

from __future__ import annotations

import threading

from bowrt.runtime.batcher import BatchReport, DynamicBatcher

_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help, self.buckets = name, help, buckets
        self.series: dict[str, list[float]] = {}  # kind -> bucket counts..., sum, count
        self.lock = threading.Lock()

    def observe(self, kind: str, value: float) -> None:
        with self.lock:
            s = self.series.setdefault(kind, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    s[i] += 1
            s[-2] += value
            s[-1] += 1

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self.lock:
            for kind, s in sorted(self.series.items()):
                for bound, n in zip(self.buckets, s):
                    out.append(f'{self.name}_bucket{{kind="{kind}",le="{bound:g}"}} {n:g}')
                out += [f'{self.name}_bucket{{kind="{kind}",le="+Inf"}} {s[-1]:g}',
                        f'{self.name}_sum{{kind="{kind}"}} {s[-2]:.6g}', f'{self.name}_count{{kind="{kind}"}} {s[-1]:g}']
        return out


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.tokenize = _Histogram("bowrt_tokenize_seconds", "Validation and tokenization time per request.", _TIME_BUCKETS)
        self.queue = _Histogram("bowrt_queue_seconds", "Time from enqueue to batch start per request.", _TIME_BUCKETS)
        self.inference = _Histogram("bowrt_inference_seconds", "Encoder time per merged batch.", _TIME_BUCKETS)
        self.batch_size = _Histogram("bowrt_batch_size", "Rows per merged batch.", _SIZE_BUCKETS)

    def count(self, route: str, status: int) -> None:
        with self.lock:
            self.requests[(route, status)] = self.requests.get((route, status), 0) + 1

    def render(self, batchers: dict[str, DynamicBatcher]) -> str:
        out = ["# HELP bowrt_requests_total HTTP requests by route and status.", "# TYPE bowrt_requests_total counter"]
        with self.lock:
            out += [f'bowrt_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())]
        stats = {kind: b.stats() for kind, b in batchers.items()}
        for name, kind_, help, field in (
            ("bowrt_queue_size", "gauge", "Requests accepted and not yet answered.", "pending"),
            ("bowrt_batches_total", "counter", "Merged batches run.", "batches"),
            ("bowrt_inputs_total", "counter", "Texts encoded.", "items"),
            ("bowrt_rejected_total", "counter", "Requests refused because the queue was full (429).", "rejected"),
            ("bowrt_dropped_total", "counter", "Requests dropped unencoded (timed out or cancelled).", "dropped"),
        ):
            out += [f"# HELP {name} {help}", f"# TYPE {name} {kind_}"]
            out += [f'{name}{{kind="{k}"}} {getattr(s, field)}' for k, s in sorted(stats.items())]
        for h in (self.tokenize, self.queue, self.inference, self.batch_size):
            out += h.render()
        return "\n".join(out) + "\n"

    def batch_observer(self, kind: str):
        """The ``on_batch`` hook of ``kind``'s batcher: queue waits, inference time and batch size."""

        def observe(report: BatchReport) -> None:
            for wait in report.queue_waits_s:
                self.queue.observe(kind, wait)
            self.inference.observe(kind, report.compute_s)
            self.batch_size.observe(kind, report.rows)

        return observe
