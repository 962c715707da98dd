"""The rules planner: plain words -> a workflow, offline and deterministic.

It reads a request as one trigger ("every Monday at 9", "when someone pays on Stripe")
and a chain of actions joined by "and" / "then" / commas ("post it to Slack #sales and
email them a welcome"). Each action clause is matched against a small vocabulary per
connector; values it can read (a channel, an address, a repository, a URL, a quoted
message) go into the step, and the message templates point at the trigger's data. A
clause it cannot read is reported in `not_understood`, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from levqor.connectors import registry

DAYS = {
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
    "sunday": 0,
}
# "at 9", "at 9:30", "at 6pm", "at noon"; without "at", only a time that says it is one
# ("6pm", "17:00", "noon"), so "every day 3 reports" is not read as 3 o'clock.
TIME = (
    r"(?:\s+at\s+(?P<time>noon|midnight|\d{1,2}(?::\d{2})?\s*(?:am|pm)?)"
    r"|\s+(?P<bare>noon|midnight|\d{1,2}:\d{2}\s*(?:am|pm)?|\d{1,2}\s*(?:am|pm)))?"
)
EMAIL = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
URL = r"https?://[^\s,;]+"


@dataclass(frozen=True)
class Source:
    """What the trigger's data looks like, for the templates of the steps after it."""

    kind: str
    summary: str  # a one-line description of the event, as a template
    email: str | None = None  # the person the event is about, as a template
    amount: str | None = None  # a number to compare, as a template
    row: tuple[str, ...] = ("{{ input | tojson }}",)  # cells for a spreadsheet row


MANUAL = Source("manual", "Levqor run for {{ input | tojson }}")
WEBHOOK = Source(
    "webhook", "New event: {{ input | tojson }}", "{{ input.email }}", "{{ input.amount }}"
)
STRIPE = Source(
    "stripe",
    "Payment of {{ (input.data.object.amount_total / 100) | round(2) }} "
    "{{ input.data.object.currency | upper }} from "
    "{{ input.data.object.customer_details.email }}",
    "{{ input.data.object.customer_details.email }}",
    "{{ input.data.object.amount_total / 100 }}",
    (
        "{{ input.data.object.customer_details.email }}",
        "{{ input.data.object.amount_total / 100 }}",
        "{{ input.data.object.currency | upper }}",
    ),
)
FORM = Source(
    "form",
    "New form submission from {{ input.email }}",
    "{{ input.email }}",
    "{{ input.amount }}",
    ("{{ input.email }}", "{{ input.name }}"),
)
SCHEDULED = Source("schedule", "Scheduled run")


@dataclass
class Draft:
    prompt: str
    trigger: dict[str, Any] = field(default_factory=lambda: {"type": "manual"})
    source: Source = MANUAL
    steps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_understood: list[str] = field(default_factory=list)

    def add(self, connector: str, params: dict[str, Any], **extra: Any) -> str:
        taken = {step["id"] for step in self.steps}
        step_id, n = connector, 2
        while step_id in taken:
            step_id, n = f"{connector}_{n}", n + 1
        self.steps.append({"id": step_id, "connector": connector, "params": params, **extra})
        return step_id

    @property
    def message(self) -> str:
        """What a message step says: the last AI step's answer, else the event."""
        for step in reversed(self.steps):
            if step["connector"] == "llm":
                return f"{{{{ steps.{step['id']}.output.content }}}}"
        return self.source.summary


# --- triggers ------------------------------------------------------------------------


def read_trigger(text: str, draft: Draft) -> str:
    """Set the draft's trigger from `text`; the text with the trigger phrase removed."""
    for pattern, apply in TRIGGERS:
        found = re.search(pattern, text, re.IGNORECASE)
        if found:
            apply(found, draft)
            zone = re.search(r"\b(UTC|[A-Z][a-z]+/[A-Z][A-Za-z_]+)\b", text)
            if zone and draft.trigger["type"] == "schedule":
                draft.trigger["timezone"] = zone.group(1)
                text = text.replace(zone.group(0), " ")
            return (text[: found.start()] + " " + text[found.end() :]).strip(" ,.")
    draft.notes.append("No trigger recognised: the workflow runs when you start it.")
    return text


def _at(found: re.Match[str], default: tuple[int, int] = (9, 0)) -> tuple[int, int]:
    named = found.groupdict()
    raw = (named.get("time") or named.get("bare") or "").strip().lower()
    if not raw:
        return default
    if raw == "noon":
        return 12, 0
    if raw == "midnight":
        return 0, 0
    clock = re.match(r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?", raw)
    assert clock is not None
    hour, minute = int(clock.group(1)), int(clock.group(2) or 0)
    if clock.group(3) == "pm" and hour < 12:
        hour += 12
    if clock.group(3) == "am" and hour == 12:
        hour = 0
    return hour % 24, min(minute, 59)


def _schedule(cron: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str], Draft], None]:
    def apply(found: re.Match[str], draft: Draft) -> None:
        draft.trigger = {"type": "schedule", "cron": cron(found), "timezone": "UTC"}
        draft.source = SCHEDULED

    return apply


def _weekly(found: re.Match[str]) -> str:
    hour, minute = _at(found)
    return f"{minute} {hour} * * {DAYS[found.group('day').lower()]}"


def _daily(found: re.Match[str]) -> str:
    evening = re.search(r"evening|night", found.group(0), re.I)
    hour, minute = _at(found, (18, 0) if evening else (9, 0))
    return f"{minute} {hour} * * *"


def _weekdays(found: re.Match[str]) -> str:
    hour, minute = _at(found)
    return f"{minute} {hour} * * 1-5"


def _every_minutes(found: re.Match[str]) -> str:
    return f"*/{max(1, min(59, int(found.group('n'))))} * * * *"


def _every_hours(found: re.Match[str]) -> str:
    return f"0 */{max(1, min(23, int(found.group('n'))))} * * *"


def _webhook(source: Source) -> Callable[[re.Match[str], Draft], None]:
    def apply(_found: re.Match[str], draft: Draft) -> None:
        draft.trigger = {"type": "webhook"}
        draft.source = source
        if source is STRIPE:
            draft.notes.append(
                "Point a Stripe webhook (checkout.session.completed) at this workflow's "
                "webhook URL."
            )

    return apply


DAY = "(?P<day>" + "|".join(DAYS) + ")"
TRIGGERS: list[tuple[str, Callable[[re.Match[str], Draft], None]]] = [
    (r"every\s+(?P<n>\d+)\s+min(?:ute)?s?\b", _schedule(_every_minutes)),
    (r"every\s+(?P<n>\d+)\s+hours?\b", _schedule(_every_hours)),
    (r"\b(?:hourly|every\s+hour|once\s+an\s+hour)\b", _schedule(lambda _: "0 * * * *")),
    (rf"\b(?:every|each|on)\s+{DAY}s?{TIME}", _schedule(_weekly)),
    (rf"\b(?:every|each|on)\s+weekdays?{TIME}", _schedule(_weekdays)),
    (
        rf"\b(?:every\s+day|each\s+day|daily|every\s+morning|each\s+morning"
        rf"|every\s+evening|each\s+evening|every\s+night|nightly){TIME}",
        _schedule(_daily),
    ),
    (r"\b(?:every\s+week|weekly)\b", _schedule(lambda _: "0 9 * * 1")),
    (r"\b(?:every\s+month|monthly)\b", _schedule(lambda _: "0 9 1 * *")),
    (
        r"\bwhen(?:ever)?\s+(?:someone|somebody|a\s+customer|a\s+user)\s+pays"
        r"(?:\s+(?:on|with|via|through)\s+stripe)?"
        r"|\b(?:on|after|for)\s+(?:a|every|each)\s+(?:new\s+)?stripe\s+payment"
        r"|\bwhen(?:ever)?\s+(?:a|an)\s+(?:new\s+)?(?:stripe\s+)?(?:payment|charge|checkout)"
        r"\s+(?:succeeds|is\s+made|comes\s+in|comes\s+through|goes\s+through|completes|arrives)"
        r"(?:\s+(?:on|through|via|in)\s+stripe)?",
        _webhook(STRIPE),
    ),
    (
        r"\bwhen(?:ever)?\s+(?:a|the|my|our|someone\s+submits\s+(?:a|the|my|our))?\s*"
        r"(?:contact\s+|signup\s+|sign-up\s+)?form\s*(?:is\s+)?"
        r"(?:submitted|filled(?:\s+in)?|posts|is\s+posted|sends)?",
        _webhook(FORM),
    ),
    (
        r"\bwhen(?:ever)?\s+(?:i|we)\s+(?:receive|get)\s+a\s+webhook"
        r"|\bwhen(?:ever)?\s+a\s+webhook\s+(?:arrives|comes\s+in|is\s+received|fires)"
        r"|\b(?:on|for)\s+(?:every|each|a)\s+(?:incoming\s+)?webhook"
        r"|\bwhen(?:ever)?\s+(?:i|we|someone)\s+(?:call|calls|hit|hits|post\s+to|posts\s+to)"
        r"\s+(?:the|my|our|its|this)\s+webhook"
        r"|\bwhen(?:ever)?\s+(?:the|my|our|its|a)\s+webhook\s+(?:is\s+)?"
        r"(?:called|hit|triggered|posted\s+to)",
        _webhook(WEBHOOK),
    ),
]


# --- actions -------------------------------------------------------------------------


def _quoted(clause: str) -> str | None:
    found = re.search(r"[\"“']([^\"”']{2,})[\"”']", clause)
    return found.group(1) if found else None


def _slack(clause: str, draft: Draft) -> None:
    channel = re.search(r"#([\w-]+)", clause)
    text = _quoted(clause) or draft.message
    draft.add("slack", {"channel": f"#{channel.group(1)}" if channel else "#general", "text": text})
    if not channel:
        draft.notes.append("No Slack channel named: the draft posts to #general.")
    draft.notes.append("Add a Slack credential (bot token or incoming webhook) to the step.")


def _telegram(clause: str, draft: Draft) -> None:
    chat = re.search(r"(@\w{4,}|-?\d{5,})", clause)
    if chat is None:
        draft.not_understood.append(f"{clause} (which Telegram chat? name @channel or a chat id)")
        return
    value: int | str = int(chat.group(1)) if chat.group(1).lstrip("-").isdigit() else chat.group(1)
    draft.add("telegram", {"chat_id": value, "text": _quoted(clause) or draft.message})
    draft.notes.append("Add a Telegram credential (bot token) to the step.")


def _discord(clause: str, draft: Draft) -> None:
    draft.add("discord", {"content": _quoted(clause) or draft.message})
    draft.notes.append("Add a Discord credential (channel webhook URL) to the step.")


def _email(clause: str, draft: Draft) -> None:
    address = re.search(EMAIL, clause)
    if address:
        to = address.group(0)
    elif re.search(r"\b(them|the\s+(customer|buyer|payer|user|sender|person))\b", clause, re.I):
        if draft.source.email is None:
            draft.not_understood.append(f"{clause} (the trigger names no one to e-mail)")
            return
        to = draft.source.email
    else:
        draft.not_understood.append(f"{clause} (which address? write it out)")
        return
    welcome = re.search(r"\bwelcome\b", clause, re.I)
    subject = "Welcome!" if welcome else "Notification from Levqor"
    text = _quoted(clause) or ("Thank you, and welcome aboard." if welcome else draft.message)
    draft.add("email", {"to": to, "subject": subject, "text": text})
    draft.notes.append("Add an e-mail credential (SMTP server and sender) to the step.")


def _github(clause: str, draft: Draft) -> None:
    repo = re.search(r"\b([\w.-]+)/([\w.-]+)\b", re.sub(URL, "", clause))
    if repo is None:
        draft.not_understood.append(f"{clause} (which repository? write owner/repo)")
        return
    title = _quoted(clause) or draft.source.summary
    draft.add(
        "github",
        {"owner": repo.group(1), "repo": repo.group(2), "title": title, "body": draft.message},
    )
    draft.notes.append("Add a GitHub credential (a token with issues:write) to the step.")


def _google_sheets(clause: str, draft: Draft) -> None:
    sheet = re.search(r"spreadsheets/d/([\w-]+)", clause)
    draft.add(
        "google_sheets",
        {
            "spreadsheet_id": sheet.group(1) if sheet else "SPREADSHEET_ID",
            "values": list(draft.source.row),
        },
    )
    if not sheet:
        draft.notes.append("Replace SPREADSHEET_ID with your sheet's id (from its link).")
    draft.notes.append("Add a Google Sheets credential (an OAuth access token) to the step.")


def _notion(clause: str, draft: Draft) -> None:
    database = re.search(r"\b([0-9a-f]{32})\b", clause)
    draft.add(
        "notion",
        {
            "database_id": database.group(1) if database else "NOTION_DATABASE_ID",
            "title": draft.source.summary,
        },
    )
    if not database:
        draft.notes.append("Replace NOTION_DATABASE_ID with the database's id (from its link).")
    draft.notes.append("Add a Notion credential (an integration token) to the step.")


def _airtable(clause: str, draft: Draft) -> None:
    base = re.search(r"\b(app\w{6,})\b", clause)
    draft.add(
        "airtable",
        {
            "base_id": base.group(1) if base else "appBASEID",
            "table": "Table 1",
            "fields": {"Event": draft.source.summary},
        },
    )
    if not base:
        draft.notes.append("Replace appBASEID and the table name with your Airtable base's.")
    draft.notes.append("Add an Airtable credential (a personal access token) to the step.")


def _stripe(clause: str, draft: Draft) -> None:
    if re.search(r"\bpayment\s+link\b", clause, re.I):
        price = re.search(r"\b(price_\w+)\b", clause)
        draft.add(
            "stripe",
            {"price": price.group(1) if price else "price_REPLACE_ME", "quantity": 1},
            action="create_payment_link",
        )
        if not price:
            draft.notes.append("Replace price_REPLACE_ME with the Stripe price to sell.")
    elif draft.source.email is not None:
        draft.add("stripe", {"email": draft.source.email}, action="find_customer")
    else:
        draft.not_understood.append(f"{clause} (which customer? the trigger names no one)")
        return
    draft.notes.append("Add a Stripe credential (a secret or restricted key) to the step.")


def _llm(clause: str, draft: Draft) -> None:
    verb = re.search(
        r"\b(summari[sz]e|classify|categori[sz]e|translate|analy[sz]e|extract|draft|write)",
        clause,
        re.I,
    )
    task = (verb.group(1) if verb else "summarise").lower()
    specific = draft.source.kind in ("stripe", "form")  # the event, readably
    data = draft.message if draft.steps or specific else "{{ input | tojson }}"
    draft.add("llm", {"prompt": f"{task.capitalize()} the following in plain words:\n{data}"})


def _http(clause: str, draft: Draft) -> None:
    url = re.search(URL, clause)
    assert url is not None
    signed = re.search(r"\bsigned\b|\bwebhook\b", clause, re.I)
    reads = re.search(r"\b(?:fetch|get|download|read|load|check|poll)\b", clause, re.I)
    if signed:
        draft.add("webhook", {"url": url.group(0).rstrip("."), "payload": "{{ input }}"})
    elif reads:  # reading a URL sends nothing
        draft.add("http_request", {"method": "GET", "url": url.group(0).rstrip(".")})
    else:
        draft.add(
            "http_request",
            {"method": "POST", "url": url.group(0).rstrip("."), "json": "{{ input }}"},
        )


def _delay(clause: str, draft: Draft) -> None:
    found = re.search(r"(\d+)\s*(second|minute|hour|day)s?", clause, re.I)
    assert found is not None
    unit = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[found.group(2).lower()]
    draft.add("delay", {"seconds": int(found.group(1)) * unit})


def _filter(clause: str, draft: Draft) -> None:
    found = re.search(r"(?:over|above|more than|greater than|exceeds?)\s*\$?(\d+)", clause, re.I)
    if found is None or draft.source.amount is None:
        draft.not_understood.append(f"{clause} (a condition I cannot read)")
        return
    amount = draft.source.amount.strip("{} ")
    draft.add("filter", {"condition": f"{{{{ {amount} > {found.group(1)} }}}}"})
    rest = clause[found.end() :].strip(" ,")  # "if it is over 500 email me at ..."
    if rest:
        read_actions(rest, draft)


ACTIONS: list[tuple[str, Callable[[str, Draft], None]]] = [
    (r"\b(?:only\s+)?if\b.*\b(?:over|above|more than|greater than|exceeds?)\b", _filter),
    (r"\bwait\s+(?:for\s+)?\d+\s*(?:second|minute|hour|day)s?\b", _delay),
    (r"\b(?:summari[sz]e|classify|categori[sz]e|translate|analy[sz]e)\b|\b(?:ai|gpt|llm)\b", _llm),
    (r"\bpayment\s+link\b|\b(?:look\s*up|find)\b.*\bcustomer\b", _stripe),
    (r"\b(?:google\s+)?sheets?\b|\bspreadsheet\b", _google_sheets),
    (r"\bnotion\b", _notion),
    (r"\bairtable\b", _airtable),
    (r"\bslack\b", _slack),
    (r"\btelegram\b", _telegram),
    (r"\bdiscord\b", _discord),
    (r"\bgithub\b|\b(?:open|create|file)\s+an?\s+issue\b", _github),
    (r"\be-?mail\b|\bmail\s+(?:me|them|us)\b", _email),
    (URL, _http),
]

SPLIT = re.compile(r"\s*(?:,\s*)?(?:\band\s+then\b|\bthen\b|\band\b|;|,)\s*", re.IGNORECASE)


def read_actions(text: str, draft: Draft) -> None:
    for clause in (part.strip(" .!") for part in SPLIT.split(text)):
        if not clause or re.fullmatch(r"(?:it|that|this|please|also)", clause, re.I):
            continue
        for pattern, apply in ACTIONS:
            if re.search(pattern, clause, re.IGNORECASE):
                connector = apply.__name__.lstrip("_")
                known = connector in registry.CONNECTORS or connector in ("http", "filter")
                if not known:
                    draft.not_understood.append(f"{clause} ({connector} is not available)")
                else:
                    apply(clause, draft)
                break
        else:
            draft.not_understood.append(clause)


def draft_workflow(prompt: str) -> Draft:
    draft = Draft(prompt)
    rest = read_trigger(" ".join(prompt.split()), draft)
    rest = re.sub(r"^(?:please\s+)?(?:,\s*)?", "", rest, flags=re.IGNORECASE)
    read_actions(rest, draft)
    return draft
