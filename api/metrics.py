"""Prometheus metrics of one app: requests by route template, method and status, their latency, jobs by status.

Each app has its own registry (tests build many apps). Under gunicorn each worker process serves its own request
counters; job counts come from Redis at scrape time, so they are the same whichever worker answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from broker.store import JobStore

log = logging.getLogger(__name__)
#: The only method label values: anything else (made-up methods of unauthenticated requests) counts as `other`.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class JobsCollector(Collector):
    """`trainer_jobs{status=…}`, read from the store's per-status indexes at scrape time."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("trainer_jobs", "Jobs in the store by status", labels=["status"])
        try:
            counts = self.store.count_by_status()
        except redis.RedisError as exc:
            log.warning("metrics: cannot count jobs: %s", exc)
            return
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family


class Metrics:
    def __init__(self, store: JobStore) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "trainer_http_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "trainer_http_request_duration_seconds", "HTTP request latency", ["route", "method"],
            registry=self.registry,
        )
        self.registry.register(JobsCollector(store))

    def install(self, app: Flask) -> None:
        app.before_request(self._start)
        app.after_request(self._observe)

    def _start(self) -> None:
        g.metrics_started = time.perf_counter()

    def _observe(self, response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "<unmatched>"
        method = request.method if request.method in METHODS else "other"
        started = g.get("metrics_started", time.perf_counter())
        self.requests.labels(route, method, str(response.status_code)).inc()
        self.latency.labels(route, method).observe(time.perf_counter() - started)
        return response

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), mimetype=CONTENT_TYPE_LATEST)
