"""Security headers on every response: HTML, JSON and errors alike."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'none'; form-action 'self'"
)
# Only when the public address is HTTPS: on a plain-HTTP first run (a LAN address), it
# would send every asset request to an https:// URL nothing answers.
UPGRADE = "; upgrade-insecure-requests"
PERMISSIONS_POLICY = (
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), "
    "interest-cohort=(), browsing-topics=()"
)


def security_headers(
    *, hsts_preload: bool, csp: str = CONTENT_SECURITY_POLICY
) -> list[tuple[bytes, bytes]]:
    hsts = "max-age=63072000; includeSubDomains" + ("; preload" if hsts_preload else "")
    pairs = {
        "content-security-policy": csp,
        "strict-transport-security": hsts,
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "strict-origin-when-cross-origin",
        "cross-origin-opener-policy": "same-origin",
        "cross-origin-resource-policy": "same-origin",
        "permissions-policy": PERMISSIONS_POLICY,
    }
    return [(name.encode(), value.encode()) for name, value in pairs.items()]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, hsts_preload: bool = False, https: bool = False) -> None:
        self.app = app
        csp = CONTENT_SECURITY_POLICY + (UPGRADE if https else "")
        self.headers = security_headers(hsts_preload=hsts_preload, csp=csp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                added = [(name, value) for name, value in extra if name not in names]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)
