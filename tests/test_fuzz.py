"""Schemathesis over /openapi.json against a real `levqor up`, every check on: no server
error, no status code or content type the document does not declare, no request valid by
the schema refused, `Allow` headers that tell the truth.

CI runs a few examples per operation with a fixed seed; `make fuzz` runs many
(`LEVQOR_FUZZ_EXAMPLES`, `LEVQOR_FUZZ_SEED`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.peers import HttpPeer, UpProcess
from tests.stripe_kit import WEBHOOK_SECRET, answer_like_stripe

pytestmark = pytest.mark.fuzz
EXAMPLES = os.environ.get("LEVQOR_FUZZ_EXAMPLES", "8")
SEED = os.environ.get("LEVQOR_FUZZ_SEED", "20261129")


@pytest.fixture(scope="module")
def stripe() -> Iterator[HttpPeer]:
    peer = HttpPeer()
    answer_like_stripe(peer)
    peer.route(
        "POST",
        "/v1/billing_portal/sessions",
        200,
        {"id": "bps_1", "object": "billing_portal.session", "url": "https://portal.test/1"},
    )
    peer.start()
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stripe: HttpPeer) -> Iterator[UpProcess]:
    up = UpProcess(
        Path(tmp_path_factory.mktemp("fuzz")) / "data",
        rate_limit_per_minute="1000000",
        rate_limit_auth_per_minute="1000000",
        rate_limit_webhook_per_minute="1000000",
        free_credits="1000000",
        stripe_secret_key="sk_test_" + "s" * 24,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=stripe.url,
    )
    try:
        up.wait_ready()
        yield up
    finally:
        up.stop()


def admin_api_key(server: UpProcess) -> str:
    """An admin's API key: the fuzzer cannot log it out, and admin routes answer it."""
    email = f"fuzz-{uuid.uuid4().hex[:8]}@example.com"
    signed_up = httpx.post(
        f"{server.url}/api/v1/auth/signup", json={"email": email, "password": PASSWORD}
    )
    assert signed_up.status_code == 201, signed_up.text
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    env["LEVQOR_DATA_DIR"] = str(server.data_dir)
    subprocess.run(
        [sys.executable, "-m", "levqor", "users", "role", email, "admin"],
        env=env,
        check=True,
        capture_output=True,
    )
    token = signed_up.json()["access_token"]
    key = httpx.post(
        f"{server.url}/api/v1/api-keys",
        json={"name": "fuzz"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert key.status_code == 201, key.text
    return str(key.json()["key"])


def test_the_api_keeps_to_its_openapi_document(server: UpProcess, tmp_path: Path) -> None:
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis is not None, "schemathesis is a dev dependency"
    key = admin_api_key(server)
    result = subprocess.run(
        [
            schemathesis,
            "--config-file",
            str(Path(__file__).parent / "schemathesis.toml"),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "1",
            "--no-color",
            "--header",
            f"Authorization: Bearer {key}",
            "--generation-database",
            "none",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    (tmp_path / "schemathesis.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, failures(result.stdout) or result.stdout[-5000:] + result.stderr


def failures(output: str) -> str:
    """Each failing operation with what failed, from schemathesis' report, one per line."""
    found: list[str] = []
    operation = ""
    for line in output.splitlines():
        title = re.fullmatch(r"_+ ([A-Z]+ \S+) _+", line.strip())
        if title:
            operation = title.group(1)
        elif re.match(r"\s*- ST\d+", line) or line.strip().startswith(("Received:", "Documented:")):
            found.append(f"{operation}: {line.strip()}")
    return "\n".join(dict.fromkeys(found))
