"""Calling a service over HTTP from a step, with its failures classified.

Every connector that speaks HTTP goes through `send`: the worker's guarded client (so a
credential's `base_url` passes the SSRF guard like any user URL), the step's time limit,
and one translation of what went wrong into `connectors.errors`:

    network error, timeout, 408/425/5xx     RetryableError (honouring Retry-After)
    429                                     RateLimitedError with Retry-After
    other 4xx                               ConnectorError: retrying cannot help
"""

from __future__ import annotations

import zlib
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from levqor.connectors.base import StepContext
from levqor.connectors.errors import ConnectorError, RateLimitedError, RetryableError
from levqor.db.base import utcnow

MAX_RESPONSE_BYTES = 5 * 1024 * 1024
RETRYABLE_STATUS = frozenset({408, 425, 500, 502, 503, 504})


async def send(
    context: StepContext,
    method: str,
    url: str,
    *,
    check: bool = True,
    timeout_s: float | None = None,
    **options: Any,
) -> httpx.Response:
    """Send a request; with `check`, a failing status raises its classified error."""
    timeout = min(timeout_s or context.timeout_s, context.timeout_s)
    try:
        request = context.http.build_request(method, url, timeout=timeout, **options)
        response = await context.http.send(request, stream=True)
        try:
            await read_bounded(response, MAX_RESPONSE_BYTES)
        finally:
            await response.aclose()
    except httpx.TimeoutException as exc:
        raise RetryableError(f"timed out: {method} {_safe(url)}") from exc
    except httpx.TransportError as exc:
        raise RetryableError(f"network error: {type(exc).__name__}: {exc}") from exc
    except httpx.InvalidURL as exc:
        raise ConnectorError(f"invalid URL: {exc}") from exc
    if check:
        raise_for_status(response)
    return response


async def read_bounded(response: httpx.Response, max_bytes: int) -> None:
    """Read a streamed response's body, refusing it once it passes `max_bytes`, both
    as sent and as unpacked: a worker's memory is every user's, and a 50 KiB gzip body
    can unpack into gigabytes (httpx unpacks each network read whole, and its `aread`
    has no limit). The body is kept where `aread` would have put it."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    response._content = _unpacked(b"".join(chunks), encoding, max_bytes)


def _unpacked(raw: bytes, encoding: str, max_bytes: int) -> bytes:
    """`raw` decoded as its Content-Encoding says, no more than `max_bytes` of it: zlib's
    `max_length` bounds what it produces. The client asks for gzip or deflate only; any
    other encoding is passed on as sent, as httpx does."""
    if encoding in ("gzip", "x-gzip"):
        candidates = [zlib.MAX_WBITS | 16]
    elif encoding == "deflate":
        candidates = [zlib.MAX_WBITS, -zlib.MAX_WBITS]  # zlib-wrapped, or raw as some send
    else:
        return raw
    for wbits in candidates:
        unpacker = zlib.decompressobj(wbits)
        try:
            body = unpacker.decompress(raw, max_bytes + 1)
        except zlib.error:
            continue
        if len(body) > max_bytes or unpacker.unconsumed_tail:
            raise _too_large(max_bytes)
        return body
    raise ConnectorError(f"the response's {encoding} body is corrupt")


def _too_large(max_bytes: int) -> ConnectorError:
    return ConnectorError(f"response larger than {max_bytes} bytes")


REDIRECTS = frozenset({301, 302, 303, 307, 308})
SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


async def send_following(
    context: StepContext,
    method: str,
    url: str,
    *,
    max_redirects: int,
    headers: dict[str, str],
    **options: Any,
) -> httpx.Response:
    """`send`, following up to `max_redirects` redirects by hand: each hop is a new
    request through the guarded client, so the SSRF guard vets every address it goes
    to. As browsers do, 303 (and 301/302 after a POST) continue as a GET without a
    body, and credentials are not carried to another host."""
    response = await send(context, method, url, check=False, headers=headers, **options)
    for _ in range(max_redirects):
        location = response.headers.get("location")
        if response.status_code not in REDIRECTS or not location:
            break
        target = response.url.join(location)
        if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
            method, options = "GET", {k: v for k, v in options.items() if k not in BODY}
        if target.host != response.url.host:
            headers = {k: v for k, v in headers.items() if k.lower() not in SENSITIVE_HEADERS}
        response = await send(context, method, str(target), check=False, headers=headers, **options)
    else:
        if max_redirects and response.status_code in REDIRECTS:
            raise ConnectorError(f"more than {max_redirects} redirects")
    raise_for_status(response)
    return response


BODY = frozenset({"json", "content", "data", "files"})


def raise_for_status(response: httpx.Response, detail: str | None = None) -> None:
    """Classify an HTTP answer: 2xx/3xx pass, 429 and 5xx retry, other 4xx fail."""
    status = response.status_code
    if status < 400:
        return
    summary = f"HTTP {status} from {response.request.method} {_safe(str(response.request.url))}"
    if detail:
        summary = f"{summary}: {detail}"
    if status == 429:
        raise RateLimitedError(summary, retry_after_s=retry_after(response))
    if status in RETRYABLE_STATUS or status >= 500:
        raise RetryableError(summary, retry_after_s=retry_after(response))
    raise ConnectorError(summary if detail else f"{summary}: {response.text[:500]}")


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date (RFC 9110)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def body(response: httpx.Response) -> Any:
    """The answer's JSON when it says it is JSON, else its text."""
    if "json" in response.headers.get("content-type", ""):
        try:
            return response.json()
        except ValueError:
            return response.text
    return response.text


def _safe(url: str) -> str:
    """A URL fit for an error message: tokens in paths (Telegram's /bot<token>/, Slack
    and Discord webhook URLs) are secrets, so only scheme, host and port are kept."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}/…"
