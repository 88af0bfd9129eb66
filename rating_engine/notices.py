"""Emails to an account's administrators, in their language: the balance fell below the threshold
(once per crossing), an automatic top-up was done, failed or paused, a payment needs the customer's
confirmation, the card expires within 30 days.

The ledger writes each notice in the transaction of what it tells (a settle, a top-up's outcome),
under a key that makes it once (a crossing, a top-up, a card and month), so none is lost and none is
made twice. This module sends them: it claims the notices due for a few minutes (two processes never
send the same one), sends each through SMTP (aiosmtplib), marks it sent, and when the mail server is
down leaves it for later with a growing delay. A mail server that is down delays mails, never a
call or a top-up. (An SMTP server that accepted a mail just before this process died may receive it
again: its Message-ID, made from the notice, is the same, for the receiving side to see.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from .ledger import Account, Ledger, Notice, User
from .web.i18n import Tongue

log = logging.getLogger("rating_engine.notices")
RETRY_DELAYS = (60, 300, 1800, 3600)
"""Seconds before sending again after the mail server failed (the last one repeats)."""
LEASE = 300
"""Seconds a claimed notice is this process's to send before another may take it."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    tls: str = "starttls"
    """"starttls", "tls" (implicit, port 465) or "none" (a relay on the same machine)."""
    username: str = ""
    password: str = ""
    sender: str = "billing@localhost"
    timeout: float = 20.0

    def __repr__(self) -> str:  # never the password
        return f"SmtpSettings(host={self.host!r}, port={self.port}, tls={self.tls!r}, username={self.username!r})"


SUBJECTS = {
    "low_balance": "Your prepaid balance is below its threshold",
    "topup_done": "Automatic top-up done",
    "topup_failed": "Automatic top-up failed",
    "topup_paused": "Automatic top-up paused",
    "needs_confirmation": "A payment needs your confirmation",
    "card_expiring": "Your card on file expires soon",
}
BODIES = {
    "low_balance": "The balance of account {account} is {balance}, below its threshold of {threshold}.",
    "topup_done": "{amount} were added to account {account} from the card on file.",
    "topup_failed": "The automatic top-up of {amount} for account {account} failed: {detail}.",
    "topup_paused": "Automatic top-up of account {account} is paused after three failures. Update the card"
    " or the settings on the Prepaid Account page to resume it.",
    "needs_confirmation": "Your bank asks you to confirm the top-up of {amount} for account {account}: {url}",
    "card_expiring": "The card on file for account {account} ({detail}) expires at the end of the month.",
}


def compose(notice: Notice, admin: User, account: Account, sender: str) -> EmailMessage:
    """One notice's mail to one administrator, in their language (amounts too: "4,40 €")."""
    t = Tongue(admin.language if admin.language in ("en", "fr") else "en")
    cur = account.settings.currency
    words = {
        "account": notice.account_id,
        "balance": t.money(account.balance, cur),
        "threshold": t.money(account.settings.threshold, cur),
        "amount": t.money(notice.amount, cur),
        "detail": notice.detail,
        "url": notice.url,
    }
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = admin.email
    msg["Subject"] = t.gettext(SUBJECTS[notice.kind])
    msg["Date"] = formatdate(notice.created_at)
    msg["Message-ID"] = f"<notice-{notice.id}-{admin.username}@rating-engine>"
    msg.set_content(t.gettext(BODIES[notice.kind]).format(**words) + "\n")
    msg["Content-Language"] = t.language
    return msg


class Notifier:
    def __init__(self, ledger: Ledger, smtp: SmtpSettings, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.smtp = smtp
        self.clock = clock
        self.sent = 0
        self.failures = 0
        self._stop = asyncio.Event()

    async def _send(self, msg: EmailMessage) -> None:
        s = self.smtp
        await aiosmtplib.send(
            msg,
            hostname=s.host,
            port=s.port,
            username=s.username or None,
            password=s.password or None,
            use_tls=s.tls == "tls",
            start_tls=s.tls == "starttls",
            timeout=s.timeout,
        )

    async def run_once(self, limit: int = 50) -> int:
        """Send what is due; the number of notices sent."""
        now = int(self.clock())
        await self.ledger.note_expiring_cards(now)
        done = 0
        for notice in await self.ledger.claim_notices(now, now + LEASE, limit):
            account = await self.ledger.account(notice.account_id)
            admins = [u for u in await self.ledger.account_users(notice.account_id) if u.email]
            try:
                for admin in admins:
                    await self._send(compose(notice, admin, account, self.smtp.sender))
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                delay = RETRY_DELAYS[min(notice.attempts, len(RETRY_DELAYS) - 1)]
                await self.ledger.notice_failed(notice.id, now + delay)
                self.failures += 1
                log.warning(
                    "mail not sent: asking again later",
                    extra={"notice": notice.id, "error": type(exc).__name__, "in_seconds": delay},
                )
                continue
            await self.ledger.notice_sent(notice.id, int(self.clock()))
            done += 1
            self.sent += 1
        return done

    async def run(self, interval: float = 15.0) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:  # a bug here must not stop the page; logged, tried again
                log.exception("notices")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    def stop(self) -> None:
        self._stop.set()
