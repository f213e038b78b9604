"""Prometheus metrics for `/metrics`: latency, tokens/s, queue depth, requests per model."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    def __init__(self, queue_depth, adapters_loaded) -> None:
        # A registry per server, not prometheus_client's global one: tests run several servers in
        # one process, and the global registry refuses a metric name twice.
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tunewright_requests", "Requests answered, by model and HTTP status",
                                ["model", "status"], registry=r)
        self.latency = Histogram("tunewright_request_latency_seconds", "Time from arrival to last token",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("tunewright_time_to_first_token_seconds", "Time from arrival to first token",
                                     ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("tunewright_generated_tokens", "Tokens generated, by model", ["model"], registry=r)
        self.prompt_tokens = Counter("tunewright_prompt_tokens", "Prompt tokens read, by model", ["model"],
                                     registry=r)
        self.tokens_per_second = Gauge("tunewright_tokens_per_second", "Generated tokens per second in the last batch",
                                       registry=r)
        self.batch_size = Histogram("tunewright_batch_size", "Requests decoded together",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        Gauge("tunewright_queue_depth", "Requests waiting for a batch", registry=r).set_function(queue_depth)
        Gauge("tunewright_adapters_loaded", "Adapters held in memory", registry=r).set_function(adapters_loaded)

    def observe_batch(self, info: dict) -> None:
        self.batch_size.observe(info["size"])
        if info["seconds"] > 0:
            self.tokens_per_second.set(info["tokens"] / info["seconds"])

    def observe_finish(self, served: str, result) -> None:
        # 499, as nginx logs it: the client closed the connection before the answer was complete.
        if result.finish_reason == "cancelled":
            self.requests.labels(served, "499").inc()

    def observe_request(self, model: str, status: int, seconds: float, prompt_tokens: int = 0,
                        completion_tokens: int = 0) -> None:
        self.requests.labels(model, str(status)).inc()
        self.latency.labels(model).observe(seconds)
        if prompt_tokens:
            self.prompt_tokens.labels(model).inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(model).inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
