"""Payments for top-ups: the provider of a deployment, chosen from its config like the ledger, and
the runner that pays the top-ups the ledger asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .manual import ManualProvider
from .provider import PaymentOutcome, PaymentProvider
from .topups import TopupRunner

if TYPE_CHECKING:
    from ..config import PaymentsSection
    from ..ledger import Ledger

PROVIDERS = ("manual", "stripe")


def make_provider(section: PaymentsSection, ledger: Ledger | None = None) -> PaymentProvider:
    """The provider `[payments] provider` names; Stripe's keys come from the environment or a file."""
    if section.provider == "manual":
        return ManualProvider()
    if section.provider == "stripe":
        from .stripe_provider import StripeKeys, StripeProvider

        key = section.stripe_key()
        if ledger is None:
            raise ConfigError("the stripe provider needs the ledger")
        hook = section.stripe_webhook_secret()
        keys = StripeKeys(key, hook, section.stripe_api_base)
        return StripeProvider(ledger, keys, public_url=section.public_url, timeout=section.timeout)
    raise ConfigError(f"unknown payment provider {section.provider!r}; known: {', '.join(PROVIDERS)}")


__all__ = ["PROVIDERS", "ManualProvider", "PaymentOutcome", "PaymentProvider", "TopupRunner", "make_provider"]
