"""The server's own e-mail (password reset links, alerts), through LEVQOR_SMTP_*.

Users' e-mail steps use their own SMTP credentials (`connectors/email.py`); this is the
operator's server, configured once.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from levqor.config import Settings
from levqor.errors import LevqorError

PORTS = {"starttls": 587, "ssl": 465, "none": 25}
TIMEOUT_S = 20


class MailNotConfigured(LevqorError):
    """This server sends no e-mail: set LEVQOR_SMTP_HOST and LEVQOR_MAIL_FROM."""

    status = 503
    code = "mail_not_configured"


class MailFailed(LevqorError):
    """The e-mail could not be sent; try again in a moment."""

    status = 503
    code = "mail_failed"


def configured(settings: Settings) -> bool:
    return bool(settings.smtp_host and settings.mail_from)


async def send(settings: Settings, *, to: str, subject: str, text: str) -> str:
    """Send a plain-text message; its Message-ID."""
    if not configured(settings):
        raise MailNotConfigured()
    assert settings.mail_from is not None
    assert settings.smtp_host is not None
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=settings.mail_from.rsplit("@", 1)[-1])
    message.set_content(text)
    import aiosmtplib  # loaded by the first mail, not at every start

    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port or PORTS[settings.smtp_security],
            username=settings.smtp_username,
            password=password,
            use_tls=settings.smtp_security == "ssl",
            start_tls=settings.smtp_security == "starttls",
            timeout=TIMEOUT_S,
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise MailFailed() from exc
    return str(message["Message-ID"])
