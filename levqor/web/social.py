"""Social posting for the operator: `levqor social post TEXT [--at TIME]` through Buffer.

Buffer's current API is GraphQL at one endpoint (LEVQOR_BUFFER_URL): `createPost` with the
channel, `schedulingType: automatic` and a mode, `addToQueue` (Buffer's next free slot) or
`customScheduled` with `dueAt`. A post is queued here first and handed to Buffer at once;
if Buffer cannot be reached it stays queued and the scheduler tries again, a few times.
Buffer answers errors inside HTTP 200 (a `MutationError`, or GraphQL `errors`): those are
read too. The token is stored encrypted with the key ring.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from cryptography.fernet import MultiFernet
from sqlalchemy import select

from levqor import errors
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.db.engine import Database
from levqor.logging import get_logger
from levqor.periodic import TickTask, at_most_every
from levqor.web.models import SocialAccount, SocialPost

log = get_logger("levqor.social")
SERVICE = "buffer"
MAX_ATTEMPTS = 5
MAX_TEXT = 10_000
TIMEOUT_S = 20.0
CREATE_POST = """
mutation CreatePost($input: CreatePostInput!) {
  createPost(input: $input) {
    ... on PostActionSuccess { post { id dueAt } }
    ... on MutationError { message }
  }
}
"""


class NotConnected(errors.LevqorError):
    """No social channel yet: run `levqor social connect --channel CHANNEL_ID`."""

    status = 409
    code = "social_not_connected"


class BufferRefused(errors.LevqorError):
    """Buffer refused the post."""

    status = 502
    code = "buffer_refused"


class BufferUnreachable(errors.LevqorError):
    """Buffer did not answer; the post stays queued and is tried again."""

    status = 503
    code = "buffer_unreachable"


@dataclass(frozen=True)
class Channel:
    channel_id: str
    token: str


async def connect(db: Database, cipher: MultiFernet, *, channel_id: str, token: str) -> None:
    async with db.session(write=True) as session, session.begin():
        account = await session.get(SocialAccount, SERVICE)
        sealed = cipher.encrypt(token.encode()).decode()
        if account is None:
            session.add(
                SocialAccount(service=SERVICE, channel_id=channel_id, token_encrypted=sealed)
            )
        else:
            account.channel_id, account.token_encrypted = channel_id, sealed


async def queue(db: Database, *, text: str, due_at: datetime | None) -> SocialPost:
    if not text.strip() or len(text) > MAX_TEXT:
        raise errors.InvalidRequest(f"A post is 1 to {MAX_TEXT} characters.")
    if due_at is not None and due_at.tzinfo is None:
        raise errors.InvalidRequest("Give the time with its zone (or in UTC, ending in Z).")
    async with db.session(write=True) as session, session.begin():
        post = SocialPost(text=text, due_at=due_at, status="queued", attempts=0)
        session.add(post)
    return post


async def send_queued(db: Database, settings: Settings, cipher: MultiFernet) -> list[SocialPost]:
    """Hand every queued post to Buffer; the posts tried (sent, failed or still queued)."""
    channel = await _channel(db, cipher)
    async with db.session(write=False) as session:
        waiting = list(
            await session.scalars(
                select(SocialPost)
                .where(SocialPost.status == "queued")
                .order_by(SocialPost.created_at)
            )
        )
    return [await _send(db, settings, channel, post) for post in waiting]


def tick_task(
    db: Database, settings: Settings, cipher: MultiFernet, *, every_s: float = 60
) -> TickTask:
    """For the scheduler: at most every `every_s`, retry what Buffer could not take."""

    async def retry_queued_posts() -> object:
        try:
            return await send_queued(db, settings, cipher)
        except NotConnected:
            return None

    return at_most_every(every_s, retry_queued_posts)


async def _channel(db: Database, cipher: MultiFernet) -> Channel:
    async with db.session(write=False) as session:
        account = await session.get(SocialAccount, SERVICE)
    if account is None:
        raise NotConnected()
    token = cipher.decrypt(account.token_encrypted.encode()).decode()
    return Channel(account.channel_id, token)


async def _send(db: Database, settings: Settings, channel: Channel, post: SocialPost) -> SocialPost:
    outcome: dict[str, object] = {"attempts": post.attempts + 1}
    try:
        buffer_id = await _create_post(settings, channel, post)
    except BufferUnreachable as exc:
        give_up = post.attempts + 1 >= MAX_ATTEMPTS
        outcome |= {"status": "failed" if give_up else "queued", "error": exc.detail}
    except BufferRefused as exc:
        outcome |= {"status": "failed", "error": exc.detail}
    else:
        outcome |= {
            "status": "sent",
            "buffer_post_id": buffer_id,
            "sent_at": utcnow(),
            "error": None,
        }
    async with db.session(write=True) as session, session.begin():
        stored = await session.get(SocialPost, post.id)
        assert stored is not None
        for name, value in outcome.items():
            setattr(stored, name, value)
    log.info("social_post", post_id=post.id, status=outcome["status"])
    return stored


async def _create_post(settings: Settings, channel: Channel, post: SocialPost) -> str:
    variables: dict[str, object] = {
        "channelId": channel.channel_id,
        "text": post.text,
        "schedulingType": "automatic",
        "mode": "addToQueue",
    }
    if post.due_at is not None:
        variables |= {"mode": "customScheduled", "dueAt": _iso(post.due_at)}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            answer = await client.post(
                settings.buffer_url,
                json={"query": CREATE_POST, "variables": {"input": variables}},
                headers={"authorization": f"Bearer {channel.token}"},
            )
    except httpx.HTTPError as exc:
        raise BufferUnreachable(f"Buffer did not answer: {type(exc).__name__}") from exc
    if answer.status_code == 429 or answer.status_code >= 500:
        raise BufferUnreachable(f"Buffer answered {answer.status_code}; tried again later.")
    if answer.status_code != 200:
        raise BufferRefused(f"Buffer answered {answer.status_code}: {answer.text[:200]}")
    body = answer.json()
    if body.get("errors"):
        raise BufferRefused(f"Buffer: {body['errors'][0].get('message', 'error')}")
    result = (body.get("data") or {}).get("createPost") or {}
    if "post" not in result:
        raise BufferRefused(f"Buffer: {result.get('message', 'the post was not created')}")
    return str(result["post"]["id"])


def _iso(moment: datetime) -> str:
    """ISO 8601 in UTC, as Buffer's `dueAt` examples write it."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )
