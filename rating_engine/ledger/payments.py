"""Payment providers for top-ups: charge an amount with an idempotency key.

No card network is in scope: `ManualProvider` records the top-up as pending for the operator
to confirm (`rating-engine account confirm-topup`); `ScriptedProvider` succeeds, fails or hangs
on demand for tests and demos.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PaymentOutcome:
    ok: bool
    pending: bool = False
    detail: str = ""

    @classmethod
    def succeeded(cls, detail: str = "") -> PaymentOutcome:
        return cls(True, False, detail)

    @classmethod
    def failed(cls, detail: str) -> PaymentOutcome:
        return cls(False, False, detail)


class PaymentProvider(Protocol):
    async def charge(self, account_id: str, amount: int, idempotency_key: str) -> PaymentOutcome: ...


class ManualProvider:
    """Leaves the top-up pending: an operator confirms it once the money has arrived."""

    async def charge(self, account_id: str, amount: int, idempotency_key: str) -> PaymentOutcome:
        return PaymentOutcome(False, True, "awaiting operator confirmation")


class ScriptedProvider:
    """Deterministic: answers each charge with the next behaviour ("ok", "fail", "hang")."""

    def __init__(self, *behaviours: str, default: str = "ok") -> None:
        self.behaviours = list(behaviours)
        self.default = default
        self.charges: list[tuple[str, int, str]] = []
        self._seen: dict[str, PaymentOutcome] = {}

    async def charge(self, account_id: str, amount: int, idempotency_key: str) -> PaymentOutcome:
        if idempotency_key in self._seen:
            return self._seen[idempotency_key]
        self.charges.append((account_id, amount, idempotency_key))
        behaviour = self.behaviours.pop(0) if self.behaviours else self.default
        if behaviour == "hang":
            await asyncio.Event().wait()
        outcome = PaymentOutcome.succeeded() if behaviour == "ok" else PaymentOutcome.failed("card declined")
        self._seen[idempotency_key] = outcome
        return outcome
