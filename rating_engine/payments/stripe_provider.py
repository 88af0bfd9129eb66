"""Card payments through Stripe (its official SDK): the card saved on Stripe's hosted page, top-ups
charged off-session on it, and Stripe's webhook events.

We never see a card number: a Checkout Session in setup mode saves the card at Stripe, and we keep
the customer and payment-method ids and what Stripe reports (brand, last four, expiry). A top-up is
a PaymentIntent confirmed at once with the ledger's top-up reference as Stripe's idempotency key,
so asking again after a timeout or a crash answers the same and never charges twice; the ledger
credits a reference once. A charge that needs 3-D Secure waits on the customer: a Checkout Session
for the same top-up is their page to confirm it, and its webhook credits the top-up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import stripe

from ..ledger import Card, Ledger
from ..ledger import programs as P
from ..money import MICRO, minor_units
from .provider import PaymentOutcome

log = logging.getLogger("rating_engine.payments")
NAME = "stripe"
HOSTED_ORIGIN = "https://checkout.stripe.com"
"""Where "Edit" and "Confirm the payment" lead (the page's CSP lets its forms go there)."""


class BadEvent(ValueError):
    """A webhook body that is not Stripe's: bad signature, stale timestamp, not JSON."""


@dataclass(frozen=True, slots=True)
class StripeKeys:
    secret_key: str = field(repr=False)
    webhook_secret: str = field(default="", repr=False)
    api_base: str = ""
    """Empty: Stripe's own API. The tests point it at a local server that speaks the same API."""


class StripeProvider:
    resumable = True
    """A top-up left pending on an unreachable Stripe is asked again at start (same key)."""
    hosted_origin = HOSTED_ORIGIN

    def __init__(
        self, ledger: Ledger, keys: StripeKeys, *, public_url: str, timeout: float = 20.0, tolerance: int = 300
    ) -> None:
        self.ledger = ledger
        self.keys = keys
        self.public_url = public_url.rstrip("/")
        self.tolerance = tolerance
        base = {"api": keys.api_base} if keys.api_base else None
        self.client = stripe.StripeClient(
            keys.secret_key,
            base_addresses=base,  # type: ignore[arg-type]
            http_client=stripe.HTTPXClient(timeout=timeout),
            max_network_retries=0,  # we ask again ourselves, with the same key
        )

    def __repr__(self) -> str:  # never the keys
        return f"StripeProvider(api={self.keys.api_base or 'stripe'})"

    # -- money
    async def _unit(self, account_id: str) -> tuple[str, int]:
        currency = (await self.ledger.account(account_id)).settings.currency
        return currency, MICRO // 10 ** minor_units(currency)

    async def charge(self, account_id: str, amount: int, idempotency_key: str) -> PaymentOutcome:
        card = await self.ledger.card(account_id)
        if card is None or not card.payment_method:
            return PaymentOutcome.failed("no card on file")
        currency, unit = await self._unit(account_id)
        if amount % unit:
            return PaymentOutcome.failed(f"{amount} micro-units is not a whole amount of {currency}")
        params: dict[str, Any] = {
            "amount": amount // unit,
            "currency": currency.lower(),
            "customer": card.customer,
            "payment_method": card.payment_method,
            "off_session": True,
            "confirm": True,
            "description": f"Prepaid top-up of {account_id}",
            "metadata": {"account": account_id, "reference": idempotency_key},
        }
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        except stripe.CardError as exc:
            code = exc.code or "card_error"
            if code == "authentication_required":
                url = await self._confirm_page(account_id, card, amount // unit, currency, idempotency_key)
                return PaymentOutcome.needs_customer(url)
            decline = getattr(exc.error, "decline_code", None) if exc.error else None
            return PaymentOutcome.failed(decline or code)
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            return PaymentOutcome.unreachable(f"stripe unreachable: {type(exc).__name__}")
        except stripe.APIError as exc:  # Stripe's own trouble (5xx): the same key is safe to ask again
            return PaymentOutcome.unreachable(f"stripe error {exc.http_status}")
        except stripe.StripeError as exc:
            return PaymentOutcome.failed(exc.code or type(exc).__name__)
        if intent.status == "succeeded":
            return PaymentOutcome.succeeded(intent.id)
        if intent.status == "processing":
            return PaymentOutcome(False, True, f"processing {intent.id}")
        if intent.status == "requires_action":
            url = await self._confirm_page(account_id, card, amount // unit, currency, idempotency_key)
            return PaymentOutcome.needs_customer(url)
        return PaymentOutcome.failed(intent.status)

    async def _confirm_page(self, account_id: str, card: Card, minor: int, currency: str, reference: str) -> str:
        """Stripe's page where the customer confirms a top-up their bank wants to authenticate; its
        payment carries the same reference, so its webhook credits this top-up, once."""
        session = await self.client.v1.checkout.sessions.create_async(
            {
                "mode": "payment",
                "customer": card.customer,
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": currency.lower(),
                            "unit_amount": minor,
                            "product_data": {"name": "Prepaid account top-up"},
                        },
                    }
                ],
                "payment_intent_data": {"metadata": {"account": account_id, "reference": reference}},
                "metadata": {"account": account_id, "reference": reference},
                "success_url": f"{self.public_url}/accounts/{account_id}/funds?confirmed=1",
                "cancel_url": f"{self.public_url}/accounts/{account_id}/funds",
            },
            {"idempotency_key": f"{reference}:confirm"},
        )
        return str(session.url)

    # -- the card on file
    async def setup_page(self, account_id: str) -> str:
        """Stripe's hosted page where the administrator saves (or replaces) the card."""
        card = await self.ledger.card(account_id)
        if card is None:
            customer = await self.client.v1.customers.create_async(
                {"description": f"Prepaid account {account_id}", "metadata": {"account": account_id}},
                {"idempotency_key": f"customer:{account_id}"},
            )
            card = await self.ledger.set_customer(account_id, NAME, customer.id)
        currency, _ = await self._unit(account_id)
        session = await self.client.v1.checkout.sessions.create_async(
            {  # type: ignore[arg-type]
                "mode": "setup",
                "customer": card.customer,
                "currency": currency.lower(),
                "payment_method_types": ["card"],
                "metadata": {"account": account_id},
                "success_url": f"{self.public_url}/accounts/{account_id}/card?saved=1",
                "cancel_url": f"{self.public_url}/accounts/{account_id}/card",
            }
        )
        return str(session.url)

    # -- webhooks
    async def handle_webhook(self, payload: bytes, signature: str) -> str:
        """Apply one signed event, once; what was done, for the log. Raises BadEvent (nothing written)."""
        if not self.keys.webhook_secret:
            raise BadEvent("no webhook secret configured")
        try:
            event = stripe.Webhook.construct_event(payload, signature, self.keys.webhook_secret, self.tolerance)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise BadEvent(str(exc).split("\n")[0]) from None
        obj = event.data.object.to_dict()
        kind = event.type
        if kind == "setup_intent.succeeded":
            return await self._card_saved(event.id, kind, obj.get("customer"), obj.get("payment_method"))
        if kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
            return await self._payment(event.id, kind, obj)
        if kind in ("payment_method.updated", "payment_method.automatically_updated"):
            return await self._card_saved(event.id, kind, obj.get("customer"), obj.get("id"), only_same=True)
        if kind == "payment_method.detached":
            before = event.data.to_dict().get("previous_attributes") or {}
            return await self._card_removed(
                event.id, kind, obj.get("customer") or before.get("customer"), obj.get("id")
            )
        return "ignored: not an event we use"

    async def _card_saved(
        self, event_id: str, kind: str, customer: Any, method: Any, *, only_same: bool = False
    ) -> str:
        card = await self.ledger.card_of_customer(NAME, _id(customer)) if customer else None
        if card is None or not method:
            return "ignored: unknown customer"
        if only_same and card.payment_method != _id(method):
            return "ignored: not the card on file"
        pm = await self.client.v1.payment_methods.retrieve_async(_id(method))
        details = pm.to_dict().get("card") or {}
        saved = Card(
            card.account_id,
            NAME,
            card.customer,
            pm.id,
            str(details.get("brand", "")),
            str(details.get("last4", "")),
            int(details.get("exp_month", 0)),
            int(details.get("exp_year", 0)),
        )
        done = await self.ledger.once_per_event(event_id, kind, P.save_card, saved, _now(), "stripe")
        return "card saved" if done else "replayed: nothing changed"

    async def _card_removed(self, event_id: str, kind: str, customer: Any, method: Any) -> str:
        card = await self.ledger.card_of_customer(NAME, _id(customer)) if customer else None
        if card is None or not method:
            return "ignored: unknown customer"
        done = await self.ledger.once_per_event(
            event_id, kind, P.remove_card, card.account_id, _id(method), _now(), "stripe"
        )
        return "card removed" if done else "replayed or not the card on file"

    async def _payment(self, event_id: str, kind: str, intent: Any) -> str:
        metadata = intent.get("metadata") or {}
        reference = str(metadata.get("reference", ""))
        topup = await self.ledger.find_topup(reference) if reference else None
        if topup is None or topup.account_id != metadata.get("account"):
            return "ignored: unknown top-up"
        _, unit = await self._unit(topup.account_id)
        if int(intent.get("amount", -1)) * unit != topup.amount:
            log.error("stripe payment does not match its top-up", extra={"reference": reference})
            return "ignored: amount differs from the top-up"
        ok = kind == "payment_intent.succeeded"
        if ok:
            detail = str(intent.get("id", ""))
        else:
            error = intent.get("last_payment_error") or {}
            if error.get("code") == "authentication_required" and topup.action_url:
                return "ignored: awaiting the customer's confirmation"
            detail = str(error.get("decline_code") or error.get("code") or "payment failed")
        done = await self.ledger.once_per_event(event_id, kind, P.complete_topup, reference, ok, detail, _now(), "")
        return ("credited" if ok else "failed") if done is not None else "replayed: nothing changed"


def _id(value: Any) -> str:
    """An id, whether Stripe sent the object expanded or as its id."""
    return str(value.get("id") if hasattr(value, "get") else value)


def _now() -> int:
    return int(time.time())
