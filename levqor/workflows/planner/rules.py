"""The rules planner: plain words -> a workflow, offline and deterministic.

A request is read as one trigger and a chain of actions:

- the trigger is a schedule (`schedule.read_schedule`: its pieces anywhere in the text), or
  an event clause opened by "when", "whenever", "each time", "after every", "on each" …
  and closed by a comma, a colon or the first action verb after it: payment words make it
  a Stripe webhook, form words a form webhook, "by hand" / "on demand" a manual run, any
  other event a webhook; nothing at all is a manual workflow;
- the actions are the rest, split at "and", "then", commas and semicolons (never inside a
  quote or a link); each clause is matched against a small vocabulary per connector.

Values it can read (a channel, an address, a repository, a link's id, a quoted message) go
into the step, and message templates point at the trigger's data. A detail the request
does not give (which Telegram chat, which repository, which spreadsheet) becomes a named,
required input of the draft, with the question to ask and why: the step stays, with a
placeholder that reads the detail from the run's input until it is answered. A clause it
cannot read at all is reported in `not_understood`, never guessed and never dropped
silently.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from levqor.connectors import registry
from levqor.workflows.planner.schedule import read_schedule

EMAIL = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
COMPARE = r"(?:over|above|more\s+than|greater\s+than|exceeds?|exceeding|at\s+least|>=?)"
MONEY = r"[$€£]?\s*(\d+(?:[.,]\d+)?)\s*(?:[$€£]|usd|eur|gbp|dollars|euros|pounds)?"
URL = r"https?://[^\s,;\"“”']+"
QUOTED = re.compile(r"[\"“]([^\"”]{1,500})[\"”]|(?<![\w])'([^']{2,500})'(?![\w])")


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


@dataclass(frozen=True)
class Needed:
    """A detail the request did not give: a required input of the draft."""

    name: str  # unique in the draft; the placeholder reads `input.<name>`
    step: str
    param: str
    question: str
    reason: str
    example: str

    @property
    def placeholder(self) -> str:
        return f"{{{{ input.{self.name} }}}}"


@dataclass
class Draft:
    prompt: str
    trigger: dict[str, Any] = field(default_factory=lambda: {"type": "manual"})
    source: Source = MANUAL
    steps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_understood: list[str] = field(default_factory=list)
    inputs: list[Needed] = field(default_factory=list)
    quotes: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)  # said with the trigger

    def next_id(self, connector: str) -> str:
        taken = {step["id"] for step in self.steps}
        step_id, n = connector, 2
        while step_id in taken:
            step_id, n = f"{connector}_{n}", n + 1
        return step_id

    def add(self, connector: str, params: dict[str, Any], **extra: Any) -> str:
        step_id = self.next_id(connector)
        self.steps.append({"id": step_id, "connector": connector, "params": params, **extra})
        return step_id

    def ask(self, connector: str, param: str, question: str, reason: str, example: str) -> str:
        """A required input for the step about to be added; its placeholder."""
        step_id = self.next_id(connector)
        needed = Needed(f"{step_id}_{param}", step_id, param, question, reason, example)
        self.inputs.append(needed)
        return needed.placeholder

    @property
    def message(self) -> str:
        """What a message step says: the last AI step's answer, else the event."""
        for step in reversed(self.steps):
            if step["connector"] == "llm":
                return f"{{{{ steps.{step['id']}.output.content }}}}"
        return self.source.summary

    def quoted(self, clause: str) -> str | None:
        """The first quoted text in the clause (quotes are kept out of the split)."""
        found = re.search(r"⟦q(\d+)⟧", clause)
        return self.quotes[int(found.group(1))] if found else None


# --- triggers ------------------------------------------------------------------------

OPENER = re.compile(
    r"\b(?:when(?:ever)?|each\s+time|every\s+time|any\s*time|as\s+soon\s+as|upon"
    r"|after\s+(?:every|each|a|an|any)|(?:on|for)\s+(?:every|each|any|an?)(?=\s+(?!\d))"
    r"|on\s+demand)\b|^if\b",
    re.IGNORECASE,
)
# Verbs that start an action: an event clause without a comma ends before one.
ACTION_VERB = re.compile(
    r"(?<!\ba\s)(?<!\ban\s)(?<!\bthe\s)(?<!\bmy\s)(?<!\bour\s)"
    r"\b(?:post|send|e-?mail|mail|create|open|file|raise|add|append|log|save|store|record"
    r"|forward|call|ping|hit|fetch|notify|tell|alert|summari[sz]e|classify|categori[sz]e"
    r"|translate|analy[sz]e|wait|pause|message|text|drop|shoot|write|look|find|use|put"
    r"|push|check|only|if|then)\b",
    re.IGNORECASE,
)
MAX_OPENERS = 4
MAX_EVENT_CHARS = 200
MANUAL_WORDS = (
    r"\b(?:click|press|hit|push)(?:es)?\s+(?:run|the\s+(?:run\s+)?button|start)\b|\brun\s+it\b"
    r"|\bby\s+hand\b|\bmanually\b|\bon\s+demand\b|\btrigger\s+it\b|\bstart\s+it\b"
)
STRIPE_WORDS = (
    r"\bstripe\b|\bpa(?:y|ys|id|ying|yments?)\b|\bpurchas\w*|\bbuys?\b|\bbought\b"
    r"|\bcheck\s*outs?\b|\bcharges?\b|\bsales?\b|\bsubscribes?\b|\binvoices?\b"
)
FORM_WORDS = r"\bforms?\b|\bsubmissions?\b|\bsubmits?\b|\bsubmitted\b"
WEBHOOK_WORDS = (
    r"\bweb\s*-?hooks?\b|\bhttp\s+(?:request|call|post)\b|\brequests?\b|\bendpoint\b"
    r"|\bpost\s+(?:hits|arrives|comes)\b|\bhooks?\s+url\b"
)


def read_trigger(text: str, draft: Draft) -> str:
    """Set the draft's trigger from `text`; the text with the trigger phrase removed."""
    schedule, rest = read_schedule(text)
    if schedule is not None:
        draft.trigger = {"type": "schedule", "cron": schedule.cron, "timezone": schedule.timezone}
        draft.source = SCHEDULED
        return _tidy(rest)
    found = _event_clause(text)
    if found is None:
        draft.notes.append("No trigger recognised: the workflow runs when you start it.")
        return text
    start, end, kind = found
    condition = re.search(rf"{COMPARE}\s*{MONEY}", text[start:end], re.IGNORECASE)
    if condition:  # "when someone pays over $1000": the event, then a filter step
        draft.conditions.append(condition.group(0))
    if kind != "manual":
        draft.trigger = {"type": "webhook"}
        draft.source = {"stripe": STRIPE, "form": FORM}.get(kind, WEBHOOK)
    if kind == "stripe":
        draft.notes.append(
            "Point a Stripe webhook (checkout.session.completed) at this workflow's webhook URL."
        )
    if kind == "form":
        draft.notes.append(
            "Point your form's submissions (as JSON) at this workflow's webhook URL."
        )
    return _tidy(text[:start] + " " + text[end:])


def _event_clause(text: str) -> tuple[int, int, str] | None:
    """Where the event clause is (start, end) and what kind of event it names.

    Bounded whatever the text: the first few openers are tried, and an event clause is
    at most MAX_EVENT_CHARS long (a longer one is no trigger phrase)."""
    for opener in itertools.islice(OPENER.finditer(text), MAX_OPENERS):
        start = opener.start()
        stop = re.compile(r"[,:;.!?]|⟦").search(text, opener.end())
        limit = min(stop.start() if stop else len(text), opener.end() + MAX_EVENT_CHARS)
        for verb in ACTION_VERB.finditer(text, opener.end(), limit):
            kind = _event_kind(text[start : verb.start()], at_start=start == 0)
            if kind is not None:
                return start, verb.start(), kind
        kind = _event_kind(text[start:limit], at_start=start == 0)
        if kind is not None:
            return start, limit, kind
    return None


def _event_kind(clause: str, *, at_start: bool) -> str | None:
    for kind, words in (
        ("manual", MANUAL_WORDS),
        ("stripe", STRIPE_WORDS),
        ("form", FORM_WORDS),
        ("webhook", WEBHOOK_WORDS),
    ):
        if re.search(words, clause, re.IGNORECASE):
            return kind
    # Any other event that opens the request ("when a new lead comes in") comes from
    # outside: a webhook. Mid-sentence, "when" is too often part of an action.
    generic = re.search(r"\b(?:comes?|arrives?|happens?|received?|gets?|is|are)\b", clause, re.I)
    return "webhook" if at_start and generic and len(clause.split()) > 2 else None


def _tidy(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" ,.:;-")


# --- actions -------------------------------------------------------------------------


def _slack(clause: str, draft: Draft) -> None:
    channel = re.search(r"(?:^|\s)#([\w-]+)", clause)
    params: dict[str, Any] = {"text": draft.quoted(clause) or draft.message}
    if channel:
        params = {"channel": f"#{channel.group(1)}", **params}
    else:
        draft.notes.append(
            "No Slack channel named: an incoming-webhook credential posts to its own channel; "
            "with a bot token, add `channel` to the step."
        )
    draft.add("slack", params)
    draft.notes.append("Add a Slack credential (bot token or incoming webhook) to the step.")


def _telegram(clause: str, draft: Draft) -> None:
    chat = re.search(r"(?<![\w.])(@\w{4,}|-?\d{5,})\b", clause)
    value: int | str
    if chat is None:
        value = draft.ask(
            "telegram",
            "chat_id",
            "Which Telegram chat should get the message?",
            "The request names no chat.",
            "@my_channel or -1001234567890",
        )
    else:
        raw = chat.group(1)
        value = int(raw) if raw.lstrip("-").isdigit() else raw
    draft.add("telegram", {"chat_id": value, "text": draft.quoted(clause) or draft.message})
    draft.notes.append("Add a Telegram credential (bot token) to the step.")


def _discord(clause: str, draft: Draft) -> None:
    draft.add("discord", {"content": draft.quoted(clause) or draft.message})
    draft.notes.append("Add a Discord credential (channel webhook URL) to the step.")


PERSON = (
    r"\b(?:them|him|her|the\s+(?:customer|buyer|payer|user|sender|person|submitter|lead"
    r"|client|subscriber|signup|sign-up)s?)\b"
)


def _email(clause: str, draft: Draft) -> None:
    address = re.search(EMAIL, clause)
    if address:
        to = address.group(0)
    elif re.search(PERSON, clause, re.I) and draft.source.email is not None:
        to = draft.source.email
    else:
        person = re.search(PERSON, clause, re.I)
        to = draft.ask(
            "email",
            "to",
            "Which address should the e-mail go to?",
            "The trigger names no one to e-mail." if person else "The request names no address.",
            "you@example.com",
        )
    subject, text = _mail_words(clause, draft)
    draft.add("email", {"to": to, "subject": subject, "text": draft.quoted(clause) or text})
    draft.notes.append("Add an e-mail credential (SMTP server and sender) to the step.")


def _mail_words(clause: str, draft: Draft) -> tuple[str, str]:
    for word, subject, text in (
        (r"\bwelcome\b", "Welcome!", "Thank you, and welcome aboard."),
        (r"\bthank", "Thank you!", "Thank you. We have received it."),
        (r"\breceipt\b", "Your receipt", draft.source.summary),
        (r"\breminder\b|\bremind\b", "Reminder", draft.message),
    ):
        if re.search(word, clause, re.I):
            return subject, text
    return "Notification from Levqor", draft.message


def _github(clause: str, draft: Draft) -> None:
    repo = re.search(r"(?<![\w@])([\w.-]+)/([\w.-]+)\b", re.sub(URL, "", clause))
    if repo is None:
        reason = "The request names no repository."
        owner = draft.ask(
            "github", "owner", "Which account owns the repository?", reason, "octocat"
        )
        name = draft.ask("github", "repo", "Which repository?", reason, "hello-world")
    else:
        owner, name = repo.group(1), repo.group(2)
    title = draft.quoted(clause) or draft.source.summary
    draft.add("github", {"owner": owner, "repo": name, "title": title, "body": draft.message})
    draft.notes.append("Add a GitHub credential (a token with issues:write) to the step.")


def _google_sheets(clause: str, draft: Draft) -> None:
    sheet = re.search(r"spreadsheets/d/([\w-]+)", clause)
    spreadsheet = (
        sheet.group(1)
        if sheet
        else draft.ask(
            "google_sheets",
            "spreadsheet_id",
            "Which spreadsheet? Paste its link or id.",
            "The request links no spreadsheet.",
            "https://docs.google.com/spreadsheets/d/1AbC…/edit",
        )
    )
    draft.add("google_sheets", {"spreadsheet_id": spreadsheet, "values": list(draft.source.row)})
    draft.notes.append("Add a Google Sheets credential (an OAuth access token) to the step.")


def _notion(clause: str, draft: Draft) -> None:
    database = re.search(r"\b([0-9a-f]{32})\b", clause)
    database_id = (
        database.group(1)
        if database
        else draft.ask(
            "notion",
            "database_id",
            "Which Notion database? Paste its link or id.",
            "The request links no database.",
            "https://www.notion.so/…/0123456789abcdef0123456789abcdef",
        )
    )
    draft.add("notion", {"database_id": database_id, "title": draft.source.summary})
    draft.notes.append("Add a Notion credential (an integration token) to the step.")


def _airtable(clause: str, draft: Draft) -> None:
    base = re.search(r"\b(app\w{6,})\b", clause)
    base_id = (
        base.group(1)
        if base
        else draft.ask(
            "airtable",
            "base_id",
            "Which Airtable base? Paste its link or id (it starts with app).",
            "The request names no base.",
            "appAbCdEf123456",
        )
    )
    draft.add(
        "airtable",
        {"base_id": base_id, "table": "Table 1", "fields": {"Event": draft.source.summary}},
    )
    draft.notes.append("The draft writes to the table 'Table 1': change it if yours differs.")
    draft.notes.append("Add an Airtable credential (a personal access token) to the step.")


def _stripe(clause: str, draft: Draft) -> None:
    if re.search(r"\bpayment\s+link\b", clause, re.I):
        price = re.search(r"\b(price_\w+)\b", clause)
        draft.add(
            "stripe",
            {
                "price": price.group(1)
                if price
                else draft.ask(
                    "stripe",
                    "price",
                    "Which Stripe price should the link sell?",
                    "The request names no price.",
                    "price_1Abc…",
                ),
                "quantity": 1,
            },
            action="create_payment_link",
        )
    else:
        email = draft.source.email or draft.ask(
            "stripe",
            "email",
            "Which customer's e-mail address should be looked up?",
            "The trigger names no customer.",
            "customer@example.com",
        )
        draft.add("stripe", {"email": email}, action="find_customer")
    draft.notes.append("Add a Stripe credential (a secret or restricted key) to the step.")


AI_TASK = (
    r"\b(summari[sz]e|classify|categori[sz]e|translate|analy[sz]e|extract|draft|write"
    r"|rewrite|answer|reply)"
)


def _llm(clause: str, draft: Draft) -> None:
    url = re.search(URL, clause)
    if url:  # "summarise https://… with AI": read the page, then the model reads it
        draft.add("http_request", {"method": "GET", "url": url.group(0).rstrip(".")})
    verb = re.search(AI_TASK, clause, re.I)
    task = (verb.group(1) if verb else "summarise").lower()
    language = re.search(r"\b(?:into|to)\s+([A-Z][a-z]+)\b", clause)
    if task == "translate" and language:
        task = f"translate into {language.group(1)}"
    if draft.steps and draft.steps[-1]["connector"] == "http_request":
        data = f"{{{{ steps.{draft.steps[-1]['id']}.output.body | tojson }}}}"
    elif draft.steps or draft.source.kind in ("stripe", "form"):
        data = draft.message
    else:
        data = "{{ input | tojson }}"
    draft.add(
        "llm", {"prompt": f"{task[:1].upper()}{task[1:]} the following in plain words:\n{data}"}
    )


def _http(clause: str, draft: Draft) -> None:
    url = re.search(URL, clause)
    assert url is not None
    address = url.group(0).rstrip(".")
    signed = re.search(r"\bsigned\b|\bwebhook\b", clause, re.I)
    reads = re.search(
        r"\b(?:fetch|get|download|read|load|check|poll|ping|hit|call|monitor|visit)\b",
        clause,
        re.I,
    )
    sends = re.search(
        r"\b(?:forward|send|post|push|submit|deliver|relay)\b|\bit\s+to\b", clause, re.I
    )
    if signed:
        draft.add("webhook", {"url": address, "payload": "{{ input }}"})
    elif reads and not sends:  # reading a URL sends nothing
        draft.add("http_request", {"method": "GET", "url": address})
    else:
        draft.add("http_request", {"method": "POST", "url": address, "json": "{{ input }}"})


UNITS = {"second": 1, "minute": 60, "min": 60, "hour": 3600, "day": 86400, "week": 604800}
DURATION = r"(\d+|an?|one)\s*(second|minute|min|hour|day|week)s?\b"


def _delay(clause: str, draft: Draft) -> None:
    found = re.search(DURATION, clause, re.I)
    assert found is not None
    count = int(found.group(1)) if found.group(1).isdigit() else 1
    draft.add("delay", {"seconds": count * UNITS[found.group(2).lower()]})
    rest = _tidy(clause[found.end() :])
    if rest:  # "after 2 days email them"
        read_actions(rest, draft)


def _filter(clause: str, draft: Draft) -> None:
    found = re.search(rf"{COMPARE}\s*{MONEY}", clause, re.I)
    if found is None or draft.source.amount is None:
        draft.not_understood.append(f"{clause} (a condition I cannot read)")
        return
    amount = draft.source.amount.strip("{} ")
    number = found.group(1)
    thousands = re.fullmatch(r"\d{1,3}(?:,\d{3})+", number)
    number = number.replace(",", "" if thousands else ".")
    operator = ">=" if re.search(r"at\s+least|>=", found.group(0)) else ">"
    draft.add("filter", {"condition": f"{{{{ {amount} {operator} {number} }}}}"})
    rest = _tidy(clause[found.end() :])
    if rest:  # "if it is over 500 email me at ..."
        read_actions(rest, draft)


ACTIONS: list[tuple[str, Callable[[str, Draft], None]]] = [
    (rf"\b(?:only\s+)?if\b.*{COMPARE}", _filter),
    (rf"\b(?:wait|pause|sleep|hold)\s+(?:for\s+)?{DURATION}|^after\s+{DURATION}", _delay),
    (
        r"\b(?:summari[sz]e|classify|categori[sz]e|translate|analy[sz]e)\b"
        r"|\b(?:ai|gpt|chatgpt|llm|openai|an?\s+model)\b",
        _llm,
    ),
    (r"\bpayment\s+link\b|\b(?:look\s*up|find)\b.*\bcustomer\b", _stripe),
    (r"\b(?:google\s+)?sheets?\b|\bspreadsheets?\b", _google_sheets),
    (r"\bnotion\b", _notion),
    (r"\bairtable\b", _airtable),
    (r"\bslack\b", _slack),
    (r"\btelegram\b", _telegram),
    (r"\bdiscord\b", _discord),
    (r"\bgithub\b|\b(?:open|create|file|raise)\s+(?:an?\s+)?(?:new\s+)?(?:issue|bug)\b", _github),
    (r"\be-?mails?\b|\bmail\b|\bdrop\s+(?:me|us|them)\s+a\s+line\b|\bnewsletter\b", _email),
    (URL, _http),
    (r"(?:^|\s)#[\w-]+", _slack),
    (EMAIL, _email),
]

SPLIT = re.compile(
    r"\s*(?:,\s*)?(?:\band\s+then\b|\bthen\b|\band\b|\bafter\s+that\b|\balso\b|;|,)\s*",
    re.IGNORECASE,
)
FILLER = re.compile(r"(?:it|that|this|please|also|finally|next|first|too)", re.IGNORECASE)


def read_actions(text: str, draft: Draft) -> None:
    links: list[str] = []

    def keep(found: re.Match[str]) -> str:  # links stay whole through the split
        links.append(found.group(0))
        return f"⟦u{len(links) - 1}⟧"

    guarded = re.sub(URL, keep, text)
    for part in SPLIT.split(guarded):
        clause = re.sub(r"⟦u(\d+)⟧", lambda m: links[int(m.group(1))], part).strip(" .!:")
        if not clause or FILLER.fullmatch(clause):
            continue
        _read_clause(clause, draft)


def _read_clause(clause: str, draft: Draft) -> None:
    bare = re.sub(r"⟦q\d+⟧", " ", clause)  # quoted words say what, not which connector
    for pattern, apply in ACTIONS:
        if re.search(pattern, bare, re.IGNORECASE):
            connector = apply.__name__.lstrip("_")
            known = connector in registry.CONNECTORS or connector in ("http", "filter")
            if not known:
                draft.not_understood.append(
                    f"{_shown(clause, draft)} ({connector} is not available)"
                )
            else:
                apply(clause, draft)
            return
    draft.not_understood.append(_shown(clause, draft))


def _shown(clause: str, draft: Draft) -> str:
    return re.sub(r"⟦q(\d+)⟧", lambda m: f'"{draft.quotes[int(m.group(1))]}"', clause)


def draft_workflow(prompt: str) -> Draft:
    draft = Draft(prompt)

    def keep(found: re.Match[str]) -> str:  # quotes are what a step says, never parsed
        draft.quotes.append(found.group(1) or found.group(2))
        return f"⟦q{len(draft.quotes) - 1}⟧"

    text = QUOTED.sub(keep, " ".join(prompt.split()))
    rest = read_trigger(text, draft)
    rest = re.sub(r"^(?:please\s+)?(?:run\s+(?:it\s+)?(?:and\s+)?)?", "", rest, flags=re.I)
    for condition in draft.conditions:
        _filter(f"only if {condition}", draft)
    read_actions(rest, draft)
    return draft
