"""Prometheus metrics shared across packages (one registry per process).

They are built at their first use, not when this module loads: prometheus-client picks
its multi-process mode when it is first imported (`levqor up` sets it up first), and a
process whose counters nothing can read counts nothing (`silence`) without loading the
library at all (a tenth of a worker's imports, 5% of its CPU per job).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

# Each is built by `_declare`, the first time any is asked for (see `__getattr__`).
RATELIMIT_FALLBACK: Counter
RATELIMIT_REDIS_UP: Gauge
RATELIMITED: Counter
ALERTS_SENT: Counter
HTTP_REQUESTS: Counter
HTTP_LATENCY: Histogram
JOBS: Counter
LEASES_RECOVERED: Counter
STEP_LATENCY: Histogram
WEBHOOKS: Counter
LLM_TOKENS: Counter
LLM_COST: Counter


def _declare() -> dict[str, Counter | Gauge | Histogram]:
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "RATELIMIT_FALLBACK": Counter(
            "levqor_ratelimit_redis_fallback_total",
            "Rate-limit decisions taken in memory because Redis did not answer.",
        ),
        "RATELIMIT_REDIS_UP": Gauge(
            "levqor_ratelimit_redis_up",
            "1 while the rate limiter reaches Redis, 0 while it falls back.",
            multiprocess_mode="livemin",  # under `serve`: 0 if any live process falls back
        ),
        "RATELIMITED": Counter(
            "levqor_ratelimited_total", "Requests refused with 429.", ["policy"]
        ),
        "ALERTS_SENT": Counter(
            "levqor_alerts_sent_total",
            "Alert deliveries tried, by channel and outcome (sent, retrying, failed).",
            ["channel", "outcome"],
        ),
        # Label values are bounded: route templates (never raw paths), status classes, connector
        # names from the registry, fixed outcome words. No user, workflow or job id.
        "HTTP_REQUESTS": Counter(
            "levqor_http_requests_total",
            "HTTP requests answered, by route template, method and status class.",
            ["route", "method", "status"],
        ),
        "HTTP_LATENCY": Histogram(
            "levqor_http_request_duration_seconds",
            "Time to the last byte of each answer, by route template and method.",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10),
        ),
        "JOBS": Counter(
            "levqor_jobs_total",
            "Jobs by outcome: enqueued, started, succeeded, retrying, failed, cancelled.",
            ["outcome"],
        ),
        "LEASES_RECOVERED": Counter(
            "levqor_job_leases_recovered_total",
            "Jobs taken back from a worker whose lease expired or that stopped beating.",
        ),
        "STEP_LATENCY": Histogram(
            "levqor_step_duration_seconds",
            "Time one step took (its connector call, retries apart), by connector.",
            ["connector"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        ),
        "WEBHOOKS": Counter(
            "levqor_webhook_intake_total",
            "Calls to workflows' webhook URLs, by outcome (accepted, refused).",
            ["outcome"],
        ),
        "LLM_TOKENS": Counter("levqor_llm_tokens_total", "LLM tokens used, by kind.", ["kind"]),
        "LLM_COST": Counter("levqor_llm_cost_micro_usd_total", "LLM cost, in micro-dollars."),
    }


Metric = TypeVar("Metric", "Counter", "Gauge", "Histogram", "_Silent")
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def labelled(metric: Metric, *values: str) -> Metric:
    """`metric.labels(*values)`, looked up once per process: prometheus_client's takes a
    lock and checks each value at every call (0.65 µs against 0.13 on a fast hour, more
    on a slow one), paid twice a job by a worker and twice a request by the API."""
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


class _Silent:
    """A metric that counts nothing: what `silence` puts in place of each."""

    def labels(self, *_values: str) -> _Silent:
        return self

    def inc(self, _amount: float = 1) -> None:
        return None

    def observe(self, _amount: float) -> None:
        return None

    def set(self, _value: float) -> None:
        return None


_METRIC_NAMES = frozenset(name for name in __annotations__ if name.isupper())


def __getattr__(name: str) -> Any:
    """`metrics.JOBS` and the others, all built the first time one is asked for (unless
    `silence` put its stand-ins first); from then on each is a plain module attribute,
    and this is not called again."""
    if name not in _METRIC_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built = _declare()
    globals().update(built)
    return built[name]


def silence() -> None:
    """Count nothing from now on in this process: with `LEVQOR_METRICS_ENABLED=false`
    (to measure what counting costs), or in a worker or scheduler process that shares no
    multi-process directory with an API process, where nothing could read its counters.
    /metrics keeps what the database says."""
    _children.clear()
    globals().update(dict.fromkeys(_METRIC_NAMES, _Silent()))
