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
    action_url: str = ""
    """Pending on the customer (3-D Secure): the provider's page where they confirm the payment."""
    retry: bool = False
    """The provider could not be reached or did not answer in time: ask again, with the same key."""

    @classmethod
    def succeeded(cls, detail: str = "") -> PaymentOutcome:
        return cls(True, False, detail)

    @classmethod
    def failed(cls, detail: str) -> PaymentOutcome:
        return cls(False, False, detail)

    @classmethod
    def needs_customer(cls, url: str, detail: str = "authentication_required") -> PaymentOutcome:
        return cls(False, True, detail, action_url=url)

    @classmethod
    def unreachable(cls, detail: str) -> PaymentOutcome:
        return cls(False, True, detail, retry=True)


class PaymentProvider(Protocol):
    async def charge(self, account_id: str, amount: int, idempotency_key: str) -> PaymentOutcome:
        """Charge once per key: the same key again must never charge twice."""
        ...
