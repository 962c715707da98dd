"""IndexNow: the changed public pages in one bulk POST as the protocol asks, the key file
served, 429 answered by waiting, and nothing sent twice."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from levqor.cli import app as cli_app
from levqor.config import Settings
from levqor.runtime import Runtime
from levqor.web import public, seo
from tests.conftest import serve_app

KEY = "0a1b2c3d4e5f6789"


@pytest.fixture
def indexnow(make_settings: Any, fresh_database: None, http_peer: Any) -> Settings:
    settings: Settings = make_settings(
        indexnow_key=KEY,
        indexnow_url=f"{http_peer.url}/indexnow",
        public_url="https://levqor.example.com",
    )
    return settings


async def test_changed_pages_go_in_one_post_as_indexnow_expects(
    indexnow: Settings, http_peer: Any
) -> None:
    http_peer.reply(202)
    async with serve_app(indexnow) as (_client, runtime):
        sent = await seo.submit(runtime.db, runtime.settings)
        again = await seo.submit(runtime.db, runtime.settings)
    assert sent.status == 202
    [request] = http_peer.requests
    assert request["method"] == "POST"
    assert request["path"] == "/indexnow"
    assert request["headers"]["content-type"].startswith("application/json")
    assert request["json"] == {
        "host": "levqor.example.com",
        "key": KEY,
        "keyLocation": f"https://levqor.example.com/{KEY}.txt",
        "urlList": [f"https://levqor.example.com{page.path}" for page in public.PAGES],
    }
    assert again.urls == []  # nothing changed since: nothing sent
    assert len(http_peer.requests) == 1


async def test_a_page_whose_words_changed_is_sent_again(
    indexnow: Settings, http_peer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve_app(indexnow) as (_client, runtime):
        await seo.submit(runtime.db, runtime.settings)
        pricing = public.PAGES[1]
        newer = replace(pricing, updated=pricing.updated + timedelta(days=1))
        monkeypatch.setattr(seo, "PAGES", (public.PAGES[0], newer, *public.PAGES[2:]))
        sent = await seo.submit(runtime.db, runtime.settings)
    assert sent.urls == ["https://levqor.example.com/pricing"]


async def test_too_many_requests_waits_and_tries_again(
    indexnow: Settings, http_peer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    http_peer.reply(429, headers={"Retry-After": "7"})
    http_peer.reply(429)
    http_peer.reply(200)
    async with serve_app(indexnow) as (_client, runtime):
        sent = await seo.submit(runtime.db, runtime.settings)
    assert sent.status == 200
    assert waits == [7.0, 2.0]  # Retry-After first, then the doubling wait
    assert len(http_peer.requests) == 3


async def test_a_refusal_is_clear_and_the_pages_stay_unsent(
    indexnow: Settings, http_peer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_peer.reply(403, {"message": "key not valid"})
    async with serve_app(indexnow) as (_client, runtime):
        with pytest.raises(seo.IndexNowRefused, match="403"):
            await seo.submit(runtime.db, runtime.settings)
        http_peer.reply(200)
        retried = await seo.submit(runtime.db, runtime.settings)
    assert len(retried.urls) == len(public.PAGES)


async def test_the_key_file_is_served_and_nothing_else(indexnow: Settings) -> None:
    async with serve_app(indexnow) as (client, _runtime):
        key = await client.get(f"/{KEY}.txt")
        other = await client.get("/0000000000000000.txt")
        robots = await client.get("/robots.txt")
    assert (key.status_code, key.text) == (200, KEY)
    assert other.status_code == 404
    assert robots.text.startswith("User-agent")


async def test_without_a_key_indexnow_is_off(runtime: Runtime) -> None:
    with pytest.raises(seo.IndexNowOff):
        await seo.submit(runtime.db, runtime.settings)


def test_the_command_says_how_to_turn_it_on(cli_env: Settings) -> None:
    result = CliRunner().invoke(cli_app, ["seo", "submit"])
    assert result.exit_code == 1
    assert "LEVQOR_INDEXNOW_KEY" in result.output
