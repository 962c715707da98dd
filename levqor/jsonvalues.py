"""What a JSON value must be to be stored, sent and read back the same everywhere.

Python's `json` accepts what the rest of the stack refuses: integers of any size (orjson,
and so the queue's writes and every answer, stops at 64 bits), `NaN` and `Infinity` (not
JSON at all). Values users send are checked at the door (`problem()`: a 422 naming the
place); values that come from elsewhere (a connector's answer, a template's result) are
made storable (`storable()`): a too-large integer becomes its decimal string, a
non-finite number `null`, anything else its text.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Any

from pydantic import AfterValidator

MIN_INT, MAX_INT = -(2**63), 2**63 - 1
MAX_DEPTH = 64


def problem(value: Any, path: str = "$", depth: int = 0) -> str | None:
    """Why `value` cannot be stored as it is (naming where), or None when it can."""
    if depth > MAX_DEPTH:
        return f"{path}: nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            return f"{path}: integers must fit in 64 bits (send larger ones as strings)"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path}: NaN and Infinity are not JSON"
    if isinstance(value, dict):
        for key, item in value.items():
            found = problem(item, f"{path}.{key}", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = problem(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
        return None
    return f"{path}: not a JSON value"


def storable(value: Any, depth: int = 0) -> Any:
    """`value` with everything JSON cannot hold replaced (see the module's docstring)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if MIN_INT <= value <= MAX_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    if depth >= MAX_DEPTH:
        return str(value)[:1024]
    if isinstance(value, dict):
        return {str(key): storable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | range):
        return [storable(item, depth + 1) for item in value]
    return str(value)


def _checked(value: Any) -> Any:
    found = problem(value)
    if found:
        raise ValueError(found)
    return value


# A field users fill with any JSON: refused at the door (422) when it cannot be stored.
StorableJson = Annotated[Any, AfterValidator(_checked)]


def is_true(value: Any) -> bool:
    """A condition's verdict: text is false when empty or "false", "0", "no", "none",
    "null" (any case); anything else by Python's truth."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)
