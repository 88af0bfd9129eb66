"""The manual provider: the money comes by bank transfer, and an operator confirms it."""

from __future__ import annotations

from .provider import PaymentOutcome


class ManualProvider:
    """Leaves the top-up pending until `rating-engine account confirm-topup` records the outcome."""

    name = "manual"

    async def charge(self, account_id: str, amount: int, idempotency_key: str) -> PaymentOutcome:
        return PaymentOutcome(False, True, "awaiting operator confirmation")
