"""Automatic top-ups: what a settle asks for is paid here, outside the ledger's transaction.

The ledger decides that a top-up is due (once per crossing of the threshold, never two in flight
for one account) and reports it in the settle's result; the runner charges the provider with the
top-up's reference as the idempotency key, in a task of its own, and records the outcome. A slow or
dead provider delays nothing but the top-up itself.
"""

from __future__ import annotations

import asyncio
import logging

from ..ledger import Ledger, TopupRequest
from .provider import PaymentOutcome, PaymentProvider

log = logging.getLogger("rating_engine.payments")


class TopupRunner:
    def __init__(self, ledger: Ledger, provider: PaymentProvider, timeout: float = 30.0) -> None:
        self.ledger = ledger
        self.provider = provider
        self.timeout = timeout
        self._tasks: set[asyncio.Task[PaymentOutcome]] = set()

    def start(self, request: TopupRequest) -> None:
        """Pay in the background (the caller is a settle on the live path: it never waits)."""
        task = asyncio.get_running_loop().create_task(self.pay(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def pay(self, request: TopupRequest) -> PaymentOutcome:
        try:
            outcome = await asyncio.wait_for(
                self.provider.charge(request.account_id, request.amount, request.reference), self.timeout
            )
        except TimeoutError:
            outcome = PaymentOutcome.failed("payment provider timed out; retrying with the same key is safe")
        except Exception as exc:  # a provider's bug must not lose the outcome
            outcome = PaymentOutcome.failed(f"payment provider error: {type(exc).__name__}")
        if outcome.pending:
            log.info("auto top-up awaits confirmation", extra={"reference": request.reference})
            return outcome
        await self.ledger.complete_topup(request.reference, outcome.ok, outcome.detail)
        if not outcome.ok:
            log.error(
                "auto top-up failed",
                extra={"account": request.account_id, "reference": request.reference, "detail": outcome.detail},
            )
        return outcome

    async def drain(self) -> None:
        """Wait for the payments under way (before the ledger closes)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
