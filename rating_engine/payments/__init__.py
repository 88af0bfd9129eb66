"""Payments for top-ups: the provider of a deployment, chosen from its config like the ledger, and
the runner that pays the automatic top-ups the ledger asks for."""

from __future__ import annotations

from ..errors import ConfigError
from .manual import ManualProvider
from .provider import PaymentOutcome, PaymentProvider
from .topups import TopupRunner

PROVIDERS = ("manual",)


def make_provider(name: str) -> PaymentProvider:
    """The provider `[payments] provider` names."""
    if name == "manual":
        return ManualProvider()
    raise ConfigError(f"unknown payment provider {name!r}; known: {', '.join(PROVIDERS)}")


__all__ = ["PROVIDERS", "ManualProvider", "PaymentOutcome", "PaymentProvider", "TopupRunner", "make_provider"]
