"""Prometheus metrics, on a registry per app instance (tests build many apps in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.http_requests = Counter(
            "cwbs_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "cwbs_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=r
        )
        self.webhooks = Counter("cwbs_webhooks_total", "Portal webhook deliveries by outcome", ["outcome"], registry=r)
        self._webhook_outcomes: dict[str, Any] = {}
        self.intake_batch_size = Histogram(
            "cwbs_intake_batch_size",
            "Webhook deliveries written per transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.intake_batch_latency = Histogram(
            "cwbs_intake_batch_duration_seconds", "Time to write and commit one batch of deliveries", registry=r
        )
        self.sync_queue_depth = Gauge("cwbs_sync_queue_depth", "Companies waiting for a reconcile", registry=r)
        self.sync_jobs = Counter("cwbs_sync_jobs_total", "Reconcile jobs by outcome", ["outcome"], registry=r)
        self.sync_job_latency = Histogram("cwbs_sync_job_duration_seconds", "Reconcile job duration", registry=r)
        self.cw_calls = Counter(
            "cwbs_cw_calls_total",
            "ConnectWise calls by method and outcome",
            ["method", "outcome"],
            registry=r,
        )
        self.drift = Gauge("cwbs_drift_companies", "Companies currently flagged with drift", registry=r)
        self.deliveries_applied = Counter(
            "cwbs_deliveries_applied_total", "Stored webhook deliveries applied to the license history", registry=r
        )
        self.worker_healthy = Gauge(
            "cwbs_worker_healthy", "1 while the in-process worker's last turn succeeded, 0 while turns fail", registry=r
        )

    def webhook_outcome(self, outcome: str) -> None:
        """Count a delivery by outcome (the labelled series looked up once per outcome, not per delivery)."""
        series = self._webhook_outcomes.get(outcome)
        if series is None:
            series = self._webhook_outcomes[outcome] = self.webhooks.labels(outcome)
        series.inc()
