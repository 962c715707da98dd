"""Stripe webhook intake: signed `checkout.session.completed` events applied per second.

    python bench/billing.py [--backend sqlite|postgres|both] [--events 2000] [--concurrency 16]

The app runs in this process (no network between client and app, so this measures the
signature check, the event's transaction and the database); every event is sent once,
then all again (Stripe redelivers): the second pass must change nothing. The report says
whether credits and payments add up exactly. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import func, select

# The project root instead of bench/: its queue.py would shadow the standard library's.
sys.path[0] = str(Path(__file__).parent.parent)
from bench.api import postgres_database
from levqor.accounts.models import User
from levqor.app import create_app
from levqor.billing.models import Payment
from levqor.bootstrap import build_runtime
from levqor.config import Settings, with_generated_secrets
from levqor.db import migrate

SECRET = "whsec_" + "b" * 32
USERS = 50


def signed(body: dict[str, Any]) -> tuple[bytes, str]:
    payload = json.dumps(body).encode()
    at = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, f"t={at},v1={digest}"


def pack_event(user_id: str) -> dict[str, Any]:
    suffix = uuid.uuid4().hex
    return {
        "id": f"evt_{suffix}",
        "type": "checkout.session.completed",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": f"cs_{suffix}",
                "object": "checkout.session",
                "mode": "payment",
                "payment_status": "paid",
                "amount_total": 1000,
                "currency": "usd",
                "metadata": {"user_id": user_id, "pack": "credits_1k"},
                "payment_intent": f"pi_{suffix}",
            }
        },
    }


async def deliver_all(
    client: httpx.AsyncClient, events: list[tuple[bytes, str]], concurrency: int
) -> dict[str, Any]:
    queue = list(reversed(events))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def sender() -> None:
        while queue:
            payload, signature = queue.pop()
            started = time.perf_counter()
            answer = await client.post(
                "/api/v1/billing/webhook",
                content=payload,
                headers={"stripe-signature": signature, "content-type": "application/json"},
            )
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "events_per_s": round(len(events) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "statuses": statuses,
    }


async def measure(database_url: str | None, events: int, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        settings = with_generated_secrets(
            Settings(
                _env_file=None,
                data_dir=Path(directory),
                database_url=database_url,
                encryption_keys=[Fernet.generate_key().decode()],
                stripe_secret_key="sk_test_bench",
                stripe_webhook_secret=SECRET,
                access_log=False,
                rate_limit_auth_per_minute=10_000,
            )
        )
        migrate.upgrade(settings)
        runtime = build_runtime(settings)
        transport = httpx.ASGITransport(app=create_app(settings, runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            user_ids = []
            for n in range(USERS):
                answer = await client.post(
                    "/api/v1/auth/signup",
                    json={"email": f"payer{n}@example.com", "password": "bench password 1"},
                )
                user_ids.append(answer.json()["user"]["id"])
            bodies = [signed(pack_event(user_ids[n % USERS])) for n in range(events)]
            first = await deliver_all(client, bodies, concurrency)
            again = await deliver_all(client, bodies, concurrency)
        async with runtime.db.session(write=False) as session:
            credits = await session.scalar(select(func.sum(User.credits)))
            payments = await session.scalar(select(func.count()).select_from(Payment))
        await runtime.close()
    expected = USERS * settings.free_credits + events * 1000
    return {
        "events": events,
        "concurrency": concurrency,
        "first_delivery": first,
        "redelivery": again,
        "payments": payments,
        "credits_add_up": credits == expected and payments == events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    report: dict[str, Any] = {"benchmark": "stripe_webhooks"}
    if args.backend in ("sqlite", "both"):
        report["sqlite"] = asyncio.run(measure(None, args.events, args.concurrency))
    if args.backend in ("postgres", "both"):
        with postgres_database(args.postgres) as url:
            report["postgres"] = asyncio.run(measure(url, args.events, args.concurrency))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
