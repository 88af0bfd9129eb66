"""What a payment provider is asked (charge an amount under an idempotency key) and answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PaymentOutcome:
    ok: bool
    pending: bool = False
    """Neither done nor refused yet: an operator (or the provider's webhook) will say."""
    detail: str = ""

    @classmethod
    def succeeded(cls, detail: str = "") -> PaymentOutcome:
        return cls(True, False, detail)

    @classmethod
    def failed(cls, detail: str) -> PaymentOutcome:
        return cls(False, False, detail)


class PaymentProvider(Protocol):
    async def charge(self, account_id: str, amount: int, idempotency_key: str) -> PaymentOutcome:
        """Charge once per key: the same key again must never charge twice."""
        ...
