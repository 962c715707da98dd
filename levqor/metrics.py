"""Prometheus metrics shared across packages (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RATELIMIT_FALLBACK = Counter(
    "levqor_ratelimit_redis_fallback_total",
    "Rate-limit decisions taken in memory because Redis did not answer.",
)
RATELIMIT_REDIS_UP = Gauge(
    "levqor_ratelimit_redis_up", "1 while the rate limiter reaches Redis, 0 while it falls back."
)
RATELIMITED = Counter("levqor_ratelimited_total", "Requests refused with 429.", ["policy"])
ALERTS_SENT = Counter(
    "levqor_alerts_sent_total",
    "Alert deliveries tried, by channel and outcome (sent, retrying, failed).",
    ["channel", "outcome"],
)
