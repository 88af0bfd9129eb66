"""Payment providers for the tests: succeed, fail or hang on demand, and count every charge."""

from __future__ import annotations

import asyncio

from rating_engine.payments import PaymentOutcome


class ScriptedProvider:
    """Answers each charge with the next behaviour ("ok", "fail", "hang"); a key seen before gets
    the same answer and is not charged again (as a real provider's idempotency key)."""

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
