"""E-mail over SMTP (STARTTLS, implicit TLS or plain), text with an optional HTML part.

Credential: `host` and `from` (the sender address), optional `port`, `username`,
`password`, `security` (`starttls`, the default; `ssl`; `none`) and `verify_tls`.

Never sends to a suppressed address: one nobody may mail (an erased account), or, for
marketing mail, one that unsubscribed from this user's; transactional mail (a receipt)
still reaches an address that only unsubscribed. A skipped address is reported, and the
step still succeeds. Marketing mail goes one message per recipient with RFC 8058
one-click `List-Unsubscribe` headers, and a footer (text and HTML) with the sender's
postal address and the unsubscribe link, as CAN-SPAM asks: the step's `postal_address`,
else the operator's `LEVQOR_POSTAL_ADDRESS`; marketing mail with neither is refused.
"""

from __future__ import annotations

import email.policy
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from html import escape
from typing import Any, Literal

from pydantic import ConfigDict, EmailStr, Field, field_validator

from levqor.connectors.base import (
    Action,
    Connector,
    ConnectorModel,
    MailPolicy,
    StepContext,
    secret_field,
)
from levqor.connectors.errors import ConnectorError, RetryableError

PORTS = {"starttls": 587, "ssl": 465, "none": 25}
# The default policy folds headers at 78 characters and, finding no space in a long
# unsubscribe URL, would encode it (RFC 2047), which mail clients then cannot follow.
HEADERS_UNFOLDED = email.policy.SMTP.clone(max_line_length=998)


class SendEmail(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    to: list[EmailStr] = Field(min_length=1, max_length=50)
    subject: str = Field(min_length=1, max_length=998)
    text: str = Field(min_length=1, max_length=1_000_000)
    html: str | None = Field(None, max_length=2_000_000)
    reply_to: EmailStr | None = None
    marketing: bool = Field(False, description="Newsletters and promotions: unsubscribable.")
    postal_address: str | None = Field(
        None,
        max_length=500,
        description="Your postal address for the marketing footer (CAN-SPAM); defaults to "
        "the server's.",
    )

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Smtp(ConnectorModel):
    host: str
    sender: EmailStr = Field(alias="from")
    port: int | None = Field(None, gt=0, lt=65536)
    username: str | None = None
    password: str | None = None
    security: Literal["starttls", "ssl", "none"] = "starttls"
    verify_tls: bool = True


async def run(
    _action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    mail = SendEmail.model_validate(params)
    secret_field(credential, "host", "email")
    try:
        smtp = Smtp.model_validate(credential)
    except ValueError as exc:
        raise ConnectorError(f"email: the credential is incomplete: {exc}") from exc
    policy = context.mail
    if policy is None:
        raise ConnectorError("email: no mail policy (the engine sets one for every run)")
    recipients: list[str] = []
    suppressed: list[str] = []
    for address in mail.to:
        blocked = await policy.suppressed(address, mail.marketing)
        (suppressed if blocked else recipients).append(address)
    if not recipients:
        return {"sent": 0, "message_ids": [], "suppressed": suppressed}
    mail.postal_address = mail.postal_address or policy.postal_address
    if mail.marketing and not mail.postal_address:
        raise ConnectorError(
            "email: marketing mail must show the sender's postal address (CAN-SPAM): set "
            "the step's postal_address or LEVQOR_POSTAL_ADDRESS"
        )
    batches = [[address] for address in recipients] if mail.marketing else [recipients]
    address = await policy.vet_host(smtp.host, smtp.port or PORTS[smtp.security])
    sent = [
        await _send(
            _message(mail, smtp, batch, policy, _message_id(context, index, smtp)),
            smtp,
            batch,
            context,
            address,
        )
        for index, batch in enumerate(batches)
    ]
    return {"sent": len(recipients), "message_ids": sent, "suppressed": suppressed}


def _message_id(context: StepContext, index: int, smtp: Smtp) -> str:
    """The same on every try of the step: a retry after a lost answer sends a copy that
    mail systems can recognise as one (and threads show once)."""
    return f"<{context.idempotency_key}.{index}@{smtp.sender.rsplit('@', 1)[1]}>"


def _message(
    mail: SendEmail, smtp: Smtp, batch: list[str], policy: MailPolicy, message_id: str
) -> EmailMessage:
    message = EmailMessage(policy=HEADERS_UNFOLDED)
    message["From"] = smtp.sender
    message["To"] = ", ".join(batch)
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id
    if mail.reply_to:
        message["Reply-To"] = mail.reply_to
    text, html = mail.text, mail.html
    if mail.marketing:
        link = policy.unsubscribe_url(batch[0])
        message["List-Unsubscribe"] = f"<{link}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        text = f"{text}\n\n--\n{mail.postal_address}\nUnsubscribe: {link}\n"
        html = html and _with_footer(html, mail.postal_address or "", link)
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    return message


def _with_footer(html: str, postal_address: str, link: str) -> str:
    footer = (
        '<hr><p style="font-size:12px;color:#666">'
        f"{escape(postal_address)}<br>"
        f'<a href="{escape(link)}">Unsubscribe</a></p>'
    )
    closing = html.lower().rfind("</body>")
    return html[:closing] + footer + html[closing:] if closing >= 0 else html + footer


async def _send(
    message: EmailMessage, smtp: Smtp, batch: list[str], context: StepContext, address: str
) -> str:
    del address  # vetted above; connecting by name keeps TLS verification working
    import aiosmtplib  # loaded by the first mail, not by every process at start

    try:
        await aiosmtplib.send(
            message.as_bytes(policy=HEADERS_UNFOLDED),  # aiosmtplib would refold it
            sender=smtp.sender,
            recipients=batch,
            hostname=smtp.host,
            port=smtp.port or PORTS[smtp.security],
            username=smtp.username,
            password=smtp.password,
            use_tls=smtp.security == "ssl",
            start_tls=smtp.security == "starttls",
            validate_certs=smtp.verify_tls,
            timeout=context.timeout_s,
        )
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise ConnectorError(f"email: the server refused the login ({exc.code})") from exc
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise ConnectorError(f"email: recipients refused: {exc.recipients}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        message_text = f"email: {exc.code} {exc.message}"
        if 400 <= exc.code < 500:
            raise RetryableError(message_text) from exc
        raise ConnectorError(message_text) from exc
    except ssl.SSLCertVerificationError as exc:  # retrying cannot make it trusted
        raise ConnectorError(f"email: the server's TLS certificate is not trusted: {exc}") from exc
    except (aiosmtplib.SMTPException, OSError) as exc:  # connect, disconnect, timeout
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            raise ConnectorError(
                f"email: the server's TLS certificate is not trusted: {exc.__cause__}"
            ) from exc
        raise RetryableError(f"email: {type(exc).__name__}: {exc}") from exc
    return str(message["Message-ID"])


CONNECTOR = Connector(
    "email",
    {"send": Action("send", SendEmail, "Send an e-mail (text, optional HTML).")},
    run,
    "Send e-mail through your SMTP server.",
    credential_fields=("host",),
)
