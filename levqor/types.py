"""Field types shared by the HTTP schemas, each with its real constraint in the schema, so
what the OpenAPI document allows is what the server accepts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field

ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_only(value: Any) -> Any:
    """Pydantic also takes a number as a Unix time; the schema says ISO 8601, so do we."""
    if isinstance(value, str) and not ISO_DATETIME.match(value):
        raise ValueError("expected an ISO 8601 date and time with its offset")
    return value


# A point in time as ISO 8601 with an offset (`2026-11-29T09:00:00Z`).
IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]


def _a_json_number(value: Any) -> Any:
    """JSON's integer: `3000` and `3000.0` are one; `true` and `"3000"` are not numbers."""
    if isinstance(value, bool | str):
        raise ValueError("expected an integer")
    return value


# An integer as JSON Schema means it (Pydantic would also read `false` and `"3000"`).
JsonInt = Annotated[int, BeforeValidator(_a_json_number)]

# The dot-atom form email-validator accepts (RFC 5322 without quoting), a domain of
# labels, and a top-level domain of letters.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}$"
Email = Annotated[
    str,
    Field(
        min_length=6,
        max_length=320,
        pattern=EMAIL_PATTERN,
    ),
]

# A keyset cursor: the last row's time (microseconds since the epoch) and id. Plain, not
# opaque: any value of this shape is a valid place to continue from.
CURSOR_PATTERN = r"^[0-9]{1,16}~(?:[a-z]{1,8}_[a-z0-9]{1,40}|[0-9]{1,18})$"

Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """Every list: newest first, `next_cursor` to ask for the rest (null on the last)."""

    data: list[Item]
    next_cursor: str | None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def encode_cursor(at: datetime, row_id: str) -> str:
    return f"{(at - EPOCH) // MICROSECOND}~{row_id}"  # exact: no float on the way


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    micros, _, row_id = cursor.partition("~")
    return EPOCH + int(micros) * MICROSECOND, row_id
