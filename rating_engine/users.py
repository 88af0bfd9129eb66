"""The people who log in to the Prepaid Account page: adding them, and checking a login.

Passwords are kept only as argon2id hashes. Logins are throttled per user name and per address
(in this process): a guessed password costs the guesser, not the account. An unknown user name is
checked against a dummy hash, so the answer takes as long as for a real one.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import RatingEngineError
from .ledger import Ledger, LedgerError, User
from .ledger.models import USERNAME

LANGUAGES = ("en", "fr")
EMAIL = re.compile(r"[^@\s<>\"',;]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
"""Enough to refuse a typo or a header injection; the mail server says the rest."""
MIN_PASSWORD = 10
WINDOW = 15 * 60
"""Seconds over which failed logins are counted."""
PER_USER = 5
PER_ADDRESS = 20
SWEEP_AT = 10_000
"""Names and addresses with failures on record past which those of no recent failure are let go."""


class UserError(RatingEngineError, ValueError):
    """A user refused before anything was written."""


class Throttled(RatingEngineError):
    """Too many failed logins lately: try again later (the password was not even checked)."""


class Users:
    def __init__(self, ledger: Ledger, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.clock = clock
        self.hasher = PasswordHasher()
        self._dummy = self.hasher.hash("not a password anyone has")
        self._failures: dict[str, deque[float]] = {}

    async def add(
        self, username: str, password: str, account_id: str | None, language: str = "", *, email: str = ""
    ) -> User:
        """An administrator of `account_id`, or an operator when it is None; `language` "" follows
        the browser until they choose one on the page."""
        if len(password) < MIN_PASSWORD:
            raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
        if language and language not in LANGUAGES:
            raise UserError(f"language: one of {', '.join(LANGUAGES)}")
        if email and (len(email) > 254 or not EMAIL.fullmatch(email)):
            raise UserError(f"not an email address: {email!r}")
        user = User(username, self.hasher.hash(password), account_id, language, int(self.clock()), email)
        try:
            return await self.ledger.add_user(user)
        except LedgerError as exc:
            raise UserError(str(exc)) from None

    def _recent(self, key: str) -> int:
        """Failures of `key` within the window. Only failures are kept, and only while recent:
        the names a guesser tries are his to choose, and must not pile up in this process."""
        seen = self._failures.get(key)
        if seen is None:
            return 0
        while seen and seen[0] < self.clock() - WINDOW:
            seen.popleft()
        if not seen:
            del self._failures[key]
        return len(seen)

    def _failed(self, keys: list[str]) -> None:
        now = self.clock()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)
        if len(self._failures) > SWEEP_AT:
            for key in [k for k, seen in self._failures.items() if seen[-1] < now - WINDOW]:
                del self._failures[key]

    async def login(self, username: str, password: str, address: str) -> User | None:
        """The user when the password is theirs; None when not. Raises Throttled after too many
        recent failures for this name or from this address. A name no user can have (not a user
        name's characters or length) is not looked up, nor counted by name: by address only."""
        named = USERNAME.fullmatch(username) is not None
        user_key, address_key = f"user:{username}", f"addr:{address}"
        if (named and self._recent(user_key) >= PER_USER) or self._recent(address_key) >= PER_ADDRESS:
            raise Throttled("too many failed logins: wait a few minutes")
        user = await self.ledger.find_user(username) if named else None
        try:
            self.hasher.verify(user.password_hash if user else self._dummy, password)
            ok = user is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            self._failed([user_key, address_key] if named else [address_key])
            return None
        self._failures.pop(user_key, None)
        return user

    async def set_language(self, user: User, language: str) -> None:
        if language in LANGUAGES:
            await self.ledger.set_user_language(user.username, language)
