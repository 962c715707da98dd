"""Access JWTs (pinned algorithm), opaque refresh tokens and API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from levqor.accounts.errors import InvalidToken
from levqor.config import Settings

ISSUER = "levqor"
ACCESS = "access"
REFRESH_PREFIX = "lvr_"
API_KEY_PREFIX = "lvq_"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "typ", "sid", "iss"]


@dataclass(frozen=True)
class AccessClaims:
    sub: str
    jti: str
    sid: str
    expires_at: datetime


class AccessTokens:
    """Issues and verifies access JWTs.

    Verified claims are remembered by token string: a client presents the same token for
    up to 15 minutes, and the signature of a given string verifies the same way every
    time. Expiry is still checked on every use, so a remembered token never outlives `exp`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        cache_size: int = 10_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        assert settings.jwt_secret is not None, "build settings with load_settings()"
        self._key = settings.jwt_secret.get_secret_value()
        self._algorithm = settings.jwt_algorithm
        self.ttl = timedelta(seconds=settings.access_token_ttl_s)
        self._leeway = timedelta(seconds=settings.jwt_leeway_s)
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()
        self._cache_size = cache_size
        self._clock = clock

    def issue(self, *, user_id: str, session_id: str, now: datetime) -> tuple[str, AccessClaims]:
        now = now.replace(microsecond=0)  # JWT times are whole seconds
        claims = AccessClaims(
            sub=user_id, jti=uuid.uuid4().hex, sid=session_id, expires_at=now + self.ttl
        )
        payload = {
            "iss": ISSUER,
            "sub": claims.sub,
            "jti": claims.jti,
            "sid": claims.sid,
            "typ": ACCESS,
            "iat": int(now.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
        }
        import jwt  # see `_verify`

        return jwt.encode(payload, self._key, algorithm=self._algorithm), claims

    def decode(self, token: str) -> AccessClaims:
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify(token)
            self._verified[token] = claims
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        if self._clock() > claims.expires_at + self._leeway:
            self._verified.pop(token, None)
            raise InvalidToken("The access token has expired.")
        return claims

    def _verify(self, token: str) -> AccessClaims:
        # PyJWT is loaded at the first token, not with this module: it loads every
        # algorithm's key classes (25 ms), and workers, which never see a token, build
        # the kit that holds this.
        import jwt

        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                issuer=ISSUER,
                leeway=self._leeway.total_seconds(),
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("The access token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken() from exc
        if payload["typ"] != ACCESS:
            raise InvalidToken("This is not an access token.")
        return AccessClaims(
            sub=str(payload["sub"]),
            jti=str(payload["jti"]),
            sid=str(payload["sid"]),
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        )


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def keyed_hash(key: str, value: str) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
