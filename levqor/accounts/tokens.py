"""Access JWTs (pinned algorithm), opaque refresh tokens and API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

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
    def __init__(self, settings: Settings) -> None:
        assert settings.jwt_secret is not None, "build settings with load_settings()"
        self._key = settings.jwt_secret.get_secret_value()
        self._algorithm = settings.jwt_algorithm
        self.ttl = timedelta(seconds=settings.access_token_ttl_s)
        self._leeway = settings.jwt_leeway_s

    def issue(self, *, user_id: str, session_id: str, now: datetime) -> tuple[str, AccessClaims]:
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
        return jwt.encode(payload, self._key, algorithm=self._algorithm), claims

    def decode(self, token: str) -> AccessClaims:
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                issuer=ISSUER,
                leeway=self._leeway,
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
