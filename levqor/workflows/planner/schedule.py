"""Schedules in plain words -> a cron expression.

A schedule is read as independent pieces found anywhere in the request, each removed from
the text once read: how often ("every 15 minutes", "hourly", "every weekday", "on Fridays",
"Monday to Friday", "monthly", "on the 15th of each month"), at what time ("at 9", "5pm",
"17:00", "9:30am", "noon", "in the evening") and in which time zone ("Europe/Berlin",
"UTC"). So "post it every day at 5pm", "at 17:00 every day" and "daily, 5 pm" are one
schedule. Without a time, a daily or weekly schedule fires at 9:00 (18:00 for "evening",
21:00 for "night").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

DAYS = {
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
    "sunday": 0,
}
DAY_WORD = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
WORKDAYS = (
    r"(?:every|each|on|all)?\s*(?:week\s*days?|work\s*days?|business\s+days?|working\s+days?)"
    r"|\b(?:monday|mon)\s*(?:to|through|thru|until|till|-|\u2013)\s*(?:friday|fri)\b"
)
WEEKENDS = r"(?:every|each|on)?\s*weekends?|\b(?:saturdays?|sat)\s+and\s+(?:sundays?|sun)\b"
# "every Monday", "on Fridays", "weekly on Tuesday", "Mondays and Thursdays"; a bare
# "Monday" (as in "the Monday report") is not a schedule.
DAY_LIST = (
    rf"\b(?:(?:every|each|on)\s+(?:week\s+on\s+)?|weekly\s+on\s+|every\s+week\s+on\s+)"
    rf"(?P<days>{DAY_WORD}s?(?:\s*(?:,|and|&)\s*{DAY_WORD}s?)*)\b"
    rf"|\b(?P<plural>{DAY_WORD}s(?:\s*(?:,|and|&)\s*{DAY_WORD}s)*)\b"
)
PART_OF_DAY = {"morning": 9, "afternoon": 14, "evening": 18, "night": 21, "tonight": 21}
CLOCK = (
    r"(?P<h>\d{1,2})(?:[:.](?P<m>\d{2}))?\s*(?P<ampm>a\.?m\.?|p\.?m\.?)?"
    r"(?:\s+(?:in\s+the\s+|at\s+)?(?P<part>morning|afternoon|evening|night))?"
)
# A time needs "at" or a mark that makes it one ("5pm", "17:00", "noon"): "every day 3
# reports" has no time in it.
TIME = re.compile(
    rf"\b(?:at|@)\s+(?:{CLOCK}|(?P<word>noon|midday|midnight))(?![\w@./-])"
    rf"|\b(?P<h2>\d{{1,2}})(?::(?P<m2>\d{{2}})\s*(?P<ampm2>am|pm)?|\s*(?P<ampm3>am|pm))\b"
    rf"|\b(?P<word2>noon|midday|midnight)\b"
    r"|\b(?:half\s+past\s+(?P<half>\d{1,2}))\b",
    re.IGNORECASE,
)
BARE_HOUR = re.compile(rf"(?:{CLOCK})(?![\w@./-])|(?P<word>noon|midday|midnight)\b", re.IGNORECASE)
ZONE = re.compile(r"\b(UTC|GMT|[A-Z][a-z]+/[A-Z][A-Za-z_]+(?:/[A-Z][A-Za-z_]+)?)\b")


@dataclass
class Schedule:
    minute: str = "0"
    hour: str = "9"
    day_of_month: str = "*"
    day_of_week: str = "*"
    timezone: str = "UTC"

    @property
    def cron(self) -> str:
        return f"{self.minute} {self.hour} {self.day_of_month} * {self.day_of_week}"


def _cut(text: str, found: re.Match[str]) -> str:
    return (text[: found.start()] + " " + text[found.end() :]).strip()


def _search(pattern: str, text: str) -> re.Match[str] | None:
    return re.search(pattern, text, re.IGNORECASE)


def read_schedule(text: str) -> tuple[Schedule | None, str]:
    """The schedule `text` asks for (None if it names none) and the text without it."""
    rest, schedule = _read_interval(text)
    if schedule is not None:
        return _with_zone(schedule, rest)
    rest, schedule, part = _read_days(text)
    if schedule is None:
        return None, text
    rest, clock = _read_time(rest)
    if clock is not None:
        hours = [clock[0]]
        while more := re.match(r"\s*(?:,|and|&)\s*(?:at\s+)?", rest[clock[2] :], re.I):
            rest_after, next_clock = _read_time(rest, start=clock[2] + more.end(), bare=True)
            if next_clock is None or next_clock[1] != clock[1]:
                break
            rest, clock = rest_after, (next_clock[0], clock[1], next_clock[2])
            hours.append(next_clock[0])
        schedule.hour = ",".join(str(hour) for hour in sorted(set(hours)))
        schedule.minute = str(clock[1])
    elif part is not None:
        schedule.hour = str(PART_OF_DAY[part])
    return _with_zone(schedule, rest)


def _with_zone(schedule: Schedule, text: str) -> tuple[Schedule, str]:
    zone = ZONE.search(text)
    if zone:
        schedule.timezone = "UTC" if zone.group(1) == "GMT" else zone.group(1)
        text = _cut(text, zone)
    return schedule, text


def _read_interval(text: str) -> tuple[str, Schedule | None]:
    """Every N minutes or hours: no time of day."""
    found = _search(r"\bevery\s+(?P<n>\d+)\s*(?:min(?:ute)?s?|m)\b", text)
    if found:
        step = max(1, min(59, int(found.group("n"))))
        return _cut(text, found), Schedule(minute="*" if step == 1 else f"*/{step}", hour="*")
    found = _search(r"\b(?:every|each)\s+minute\b", text)
    if found:
        return _cut(text, found), Schedule(minute="*", hour="*")
    found = _search(r"\b(?:every|each)\s+half\s*(?:an\s+)?hour\b|\btwice\s+an\s+hour\b", text)
    if found:
        return _cut(text, found), Schedule(minute="*/30", hour="*")
    found = _search(r"\bevery\s+(?P<n>\d+)\s*(?:hours?|hrs?|h)\b", text)
    if found:
        step = max(1, min(23, int(found.group("n"))))
        return _cut(text, found), Schedule(hour="*" if step == 1 else f"*/{step}")
    found = _search(r"\b(?:hourly|(?:every|each)\s+hour|once\s+(?:an|every|each)\s+hour)\b", text)
    if found:
        return _cut(text, found), Schedule(hour="*")
    return text, None


def _read_days(text: str) -> tuple[str, Schedule | None, str | None]:
    """Which days (or day of the month), and a part of the day said with them."""
    part = None
    found = _search(
        r"\b(?:every|each)\s+(?P<part>morning|afternoon|evening|night)\b|\b(?P<nightly>nightly)\b",
        text,
    )
    if found:
        part = "night" if found.group("nightly") else found.group("part").lower()
        text = _cut(text, found)
        schedule = Schedule()
    else:
        schedule = None
    for pattern, make in _DAY_READERS:
        day = _search(pattern, text)
        if day:
            text = _cut(text, day)
            schedule = make(day)
            break
    if schedule is None:
        return text, None, None
    found = _search(r"\b(?:in\s+the\s+)?(?P<part>morning|afternoon|evening|night)s?\b", text)
    if part is None and found and not _search(r"\b(?:at|@)\s+\d", text):
        part = found.group("part").lower()
        text = _cut(text, found)
    return text, schedule, part


def _days(found: re.Match[str]) -> Schedule:
    named = re.findall(DAY_WORD, found.group("days") or found.group("plural"), re.IGNORECASE)
    numbers = sorted({DAYS[name.lower()] for name in named})
    return Schedule(day_of_week=",".join(str(n) for n in numbers))


def _day_of_month(found: re.Match[str]) -> Schedule:
    return Schedule(day_of_month=str(max(1, min(28, int(found.group("dom"))))))


_DAY_READERS: list[tuple[str, Callable[[re.Match[str]], Schedule]]] = [
    (WORKDAYS, lambda _found: Schedule(day_of_week="1-5")),
    (WEEKENDS, lambda _found: Schedule(day_of_week="0,6")),
    (
        r"\b(?:on\s+)?the\s+(?P<dom>\d{1,2})(?:st|nd|rd|th)?\s+(?:day\s+)?of\s+"
        r"(?:every|each|the)\s+month\b",
        _day_of_month,
    ),
    (
        r"\b(?:every\s+month|each\s+month|monthly|once\s+a\s+month"
        r"|(?:(?:at|on)\s+the|every|each)\s+(?:start|beginning|first(?:\s+day)?|1st)\s+of\s+"
        r"(?:every|each|the)\s+month)\b",
        lambda _found: Schedule(day_of_month="1"),
    ),
    (DAY_LIST, _days),
    (
        r"\b(?:every\s+week|each\s+week|weekly|once\s+a\s+week)\b",
        lambda _f: Schedule(day_of_week="1"),
    ),
    (
        # "daily" after an article is an adjective ("the daily summary")
        r"\b(?:every\s+day|each\s+day|(?:once|twice)\s+a\s+day|every\s+single\s+day)\b"
        r"|(?<!the\s)(?<!\ba\s)(?<!my\s)(?<!our\s)(?<!your\s)\bdaily\b",
        lambda _found: Schedule(),
    ),
]


def _read_time(
    text: str, *, start: int = 0, bare: bool = False
) -> tuple[str, tuple[int, int, int] | None]:
    """The text without the first time from `start` and (hour, minute, where it was cut);
    `bare` also takes a lone hour there ("at 9 and 17")."""
    found = BARE_HOUR.match(text, start) if bare else TIME.search(text, start)
    if found is None:
        return text, None
    named = {key: value for key, value in found.groupdict().items() if value}
    word = (named.get("word") or named.get("word2") or "").lower()
    if word:
        hour, minute = (0, 0) if word == "midnight" else (12, 0)
    elif "half" in named:
        hour, minute = int(named["half"]), 30
    else:
        hour = int(named.get("h") or named.get("h2") or 0)
        minute = int(named.get("m") or named.get("m2") or 0)
        marker = (named.get("ampm") or named.get("ampm2") or named.get("ampm3") or "").lower()
        part = (named.get("part") or "").lower()
        if (marker.startswith("p") or part in ("afternoon", "evening", "night")) and hour < 12:
            hour += 12
        if marker.startswith("a") and hour == 12:
            hour = 0
    if hour > 23 or minute > 59:
        return text, None
    return _cut(text, found), (hour, minute, found.start())
