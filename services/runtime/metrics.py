"""Prometheus metrics of one service process, served on an HTTP `/metrics` port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "facet_requests", "RPCs handled, by method and status code", ["method", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "facet_request_latency_seconds", "RPC latency", ["method"], buckets=_LATENCY_BUCKETS_S, registry=self.registry
        )
        self.queue_time = Histogram(
            "facet_queue_time_seconds",
            "Time a request waited in the dynamic batcher",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.stream_messages = Counter(
            "facet_stream_messages", "Messages sent by server-streaming RPCs, by method", ["method"], registry=self.registry
        )
        self.in_flight = Gauge(
            "facet_requests_in_flight", "RPCs accepted and not finished, by method", ["method"], registry=self.registry
        )
        self.decoded_requests = Counter(
            "facet_decoded_requests",
            "Request messages parsed, by method (refused calls, e.g. unauthenticated, are never parsed)",
            ["method"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "facet_batch_size", "Rows per executed batch", ["model"], buckets=_BATCH_BUCKETS, registry=self.registry
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the `/metrics` HTTP endpoint in a thread; return the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)


METRICS = Metrics()
