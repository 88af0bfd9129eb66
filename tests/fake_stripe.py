"""A local server that speaks the part of Stripe's API the provider uses, for tests without the
internet: the same paths, form-encoded requests, JSON objects and error shapes as Stripe's API
reference, its Idempotency-Key rule (the same key and parameters get the first answer again, even an
error; the same key with other parameters gets Stripe's idempotency_error), and webhook events signed
with Stripe's scheme (`t=…,v1=HMAC-SHA256(secret, "t.payload")`).

Payment methods behave like Stripe's test cards: pm_card_visa succeeds, pm_card_chargeDeclined…
decline with Stripe's codes, pm_card_authenticationRequired needs 3-D Secure."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET_KEY = "sk_test_fake_0123456789"
WEBHOOK_SECRET = "whsec_fake_0123456789"
CARDS = {
    "pm_card_visa": ("visa", "4242", None),
    "pm_card_mastercard": ("mastercard", "4444", None),
    "pm_card_chargeDeclined": ("visa", "0002", ("card_declined", "generic_decline", "Your card was declined.")),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "visa",
        "9995",
        ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ),
    "pm_card_chargeDeclinedExpiredCard": ("visa", "0069", ("expired_card", "expired_card", "Your card has expired.")),
    "pm_card_authenticationRequired": ("visa", "3184", ("authentication_required", None, "Authentication required.")),
}


def _error(status: int, kind: str, message: str, **more: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, **more}}, status)


@dataclass
class FakeStripe:
    port: int = 0
    delay_payment_intents: list[float] = field(default_factory=list)
    """Seconds to hold each next /v1/payment_intents answer (after doing the work, as a slow network)."""
    charges: list[dict[str, Any]] = field(default_factory=list)
    """Every PaymentIntent that took money."""
    attempts: int = 0
    """PaymentIntents created (not idempotent replays)."""
    requests: list[str] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    _idempotent: dict[str, tuple[str, list[tuple[str, str]], int, bytes]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_test{next(self._ids):06d}"

    # -- the HTTP side
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/customers", self._customers, methods=["POST"]),
                Route("/v1/checkout/sessions", self._sessions, methods=["POST"]),
                Route("/v1/payment_intents", self._payment_intents, methods=["POST"]),
                Route("/v1/payment_methods/{pm}", self._payment_method, methods=["GET"]),
            ]
        )

    async def start(self) -> None:
        self.server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=0, log_config=None))
        self._task = asyncio.get_running_loop().create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.should_exit = True
        await self._task

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _once(self, request: Request, work: Any) -> Response:
        """Stripe's idempotency: the first answer for a key is the answer for that key."""
        if request.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return _error(401, "invalid_request_error", "Invalid API Key provided: sk_test_****")
        form = sorted((await request.form()).multi_items())
        params = [(k, str(v)) for k, v in form]
        self.requests.append(request.url.path)
        key = request.headers.get("idempotency-key")
        if key and key in self._idempotent:
            path, first, status, body = self._idempotent[key]
            if first != params or path != request.url.path:
                return _error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were first used"
                    f" with. Try using a key other than '{key}' if you meant to execute a different request.",
                )
            return Response(body, status, media_type="application/json", headers={"idempotent-replayed": "true"})
        response: Response = await work(dict(params))
        if key:
            self._idempotent[key] = (request.url.path, params, response.status_code, bytes(response.body))
        return response

    async def _customers(self, request: Request) -> Response:
        async def work(p: dict[str, str]) -> Response:
            cus: dict[str, Any] = {
                "id": self.new_id("cus"),
                "object": "customer",
                "description": p.get("description"),
                "metadata": _meta(p),
            }
            self.customers[cus["id"]] = cus
            return JSONResponse(cus)

        return await self._once(request, work)

    async def _sessions(self, request: Request) -> Response:
        async def work(p: dict[str, str]) -> Response:
            sid = self.new_id("cs")
            return JSONResponse(
                {
                    "id": sid,
                    "object": "checkout.session",
                    "mode": p.get("mode"),
                    "customer": p.get("customer"),
                    "metadata": _meta(p),
                    "url": f"https://checkout.stripe.com/c/pay/{sid}",
                    "status": "open",
                }
            )

        return await self._once(request, work)

    async def _payment_intents(self, request: Request) -> Response:
        delay = self.delay_payment_intents.pop(0) if self.delay_payment_intents else 0.0

        async def work(p: dict[str, str]) -> Response:
            self.attempts += 1
            pm = p.get("payment_method", "")
            intent: dict[str, Any] = {
                "id": self.new_id("pi"),
                "object": "payment_intent",
                "amount": int(p["amount"]),
                "currency": p["currency"],
                "customer": p.get("customer"),
                "payment_method": pm,
                "metadata": _meta(p),
                "status": "succeeded",
                "last_payment_error": None,
            }
            outcome = CARDS.get(pm, ("visa", "0000", ("resource_missing", None, f"No such PaymentMethod: '{pm}'")))[2]
            if outcome is not None:
                code, decline, message = outcome
                intent["status"] = "requires_payment_method"
                error = {"code": code, "decline_code": decline, "message": message, "type": "card_error"}
                intent["last_payment_error"] = error
                self.intents[intent["id"]] = intent
                return _error(402, "card_error", message, code=code, decline_code=decline, payment_intent=intent)
            self.intents[intent["id"]] = intent
            self.charges.append(intent)
            return JSONResponse(intent)

        response = await self._once(request, work)
        await asyncio.sleep(delay)
        return response

    async def _payment_method(self, request: Request) -> Response:
        pm = self.methods.get(request.path_params["pm"])
        if pm is None:
            return _error(404, "invalid_request_error", "No such PaymentMethod", code="resource_missing")
        return JSONResponse(pm)

    # -- what happens on Stripe's side, and the events it sends
    def attach(self, customer: str, pm: str, exp: tuple[int, int] = (12, 2030)) -> dict[str, Any]:
        brand, last4, _ = CARDS[pm]
        method = {
            "id": pm,
            "object": "payment_method",
            "type": "card",
            "customer": customer,
            "card": {"brand": brand, "last4": last4, "exp_month": exp[0], "exp_year": exp[1]},
        }
        self.methods[pm] = method
        return method

    def event(self, kind: str, obj: dict[str, Any], **data: Any) -> dict[str, Any]:
        return {
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": "2025-01-27.acacia",
            "created": int(time.time()),
            "type": kind,
            "livemode": False,
            "data": {"object": obj, **data},
        }

    def setup_succeeded(self, customer: str, pm: str) -> dict[str, Any]:
        self.attach(customer, pm)
        seti = {"id": self.new_id("seti"), "object": "setup_intent", "customer": customer, "payment_method": pm}
        return self.event("setup_intent.succeeded", {**seti, "status": "succeeded"})

    def customer_confirms(self, reference: str, account: str, amount: int, currency: str = "eur") -> dict[str, Any]:
        """The customer passed 3-D Secure on the Checkout page: its payment succeeds."""
        intent = {
            "id": self.new_id("pi"),
            "object": "payment_intent",
            "amount": amount,
            "currency": currency,
            "status": "succeeded",
            "metadata": {"account": account, "reference": reference},
        }
        self.charges.append(intent)
        return self.event("payment_intent.succeeded", intent)


def _meta(p: dict[str, str]) -> dict[str, str]:
    return {k[len("metadata[") : -1]: v for k, v in p.items() if k.startswith("metadata[")}


def signed(event: dict[str, Any], secret: str = WEBHOOK_SECRET, at: int | None = None) -> tuple[bytes, str]:
    """The body and Stripe-Signature header Stripe would send."""
    body = json.dumps(event).encode()
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={t},v1={mac}"
