"""Automatic top-ups: what a settle asks for is paid here, outside the ledger's transaction.

The ledger decides that a top-up is due (once per crossing of the threshold, never two in flight
for one account) and reports it in the settle's result; the runner charges the provider with the
top-up's reference as the idempotency key, in a task of its own, and records the outcome. A slow or
dead provider delays nothing but the top-up itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from ..ledger import Ledger, TopupRequest
from .provider import PaymentOutcome, PaymentProvider

log = logging.getLogger("rating_engine.payments")


RETRY_DELAYS = (30.0, 120.0, 600.0)
"""Seconds before asking an unreachable provider again (same key); after the last, the top-up stays
pending: the provider's webhook, the operator, or the next start settles it."""


class TopupRunner:
    def __init__(
        self,
        ledger: Ledger,
        provider: PaymentProvider,
        timeout: float = 30.0,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self.ledger = ledger
        self.provider = provider
        self.timeout = timeout
        self.retry_delays = retry_delays
        self.attempts = 0
        self.outcomes: Counter[str] = Counter()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[PaymentOutcome]] = set()

    def start(self, request: TopupRequest) -> None:
        """Pay in the background (the caller is a settle on the live path: it never waits)."""
        task = asyncio.get_running_loop().create_task(self.pay(request, retries=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, request: TopupRequest) -> PaymentOutcome:
        self.attempts += 1
        try:
            return await asyncio.wait_for(
                self.provider.charge(request.account_id, request.amount, request.reference), self.timeout
            )
        except TimeoutError:
            return PaymentOutcome.unreachable("payment provider timed out")
        except Exception as exc:  # a provider's bug must not lose the top-up: it stays pending
            log.exception("payment provider error", extra={"reference": request.reference})
            return PaymentOutcome.unreachable(f"payment provider error: {type(exc).__name__}")

    async def pay(self, request: TopupRequest, *, retries: bool = False) -> PaymentOutcome:
        """Charge once under the top-up's reference and record the outcome. An unreachable provider
        is asked again after each of `retry_delays` when `retries` (the same key: never two charges)."""
        outcome = await self._ask(request)
        for delay in self.retry_delays if retries else ():
            if not outcome.retry:
                break
            log.warning(
                "payment provider unreachable: asking again",
                extra={"reference": request.reference, "detail": outcome.detail, "in_seconds": delay},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return outcome  # still pending: the next start asks again
            outcome = await self._ask(request)
        self.outcomes["pending" if outcome.pending else "succeeded" if outcome.ok else "failed"] += 1
        if outcome.pending:
            if outcome.action_url:
                await self.ledger.set_topup_action(request.reference, outcome.action_url)
            log.info(
                "top-up awaits confirmation",
                extra={"reference": request.reference, "detail": outcome.detail or "the operator"},
            )
            return outcome
        await self.ledger.complete_topup(request.reference, outcome.ok, outcome.detail)
        automatic = request.reference.startswith("auto:")
        if not outcome.ok and automatic and (await self.ledger.account(request.account_id)).topup_paused:
            self.outcomes["paused"] += 1
            log.error("automatic top-up paused after failures", extra={"account": request.account_id})
        if not outcome.ok:
            log.error(
                "top-up failed",
                extra={"account": request.account_id, "reference": request.reference, "detail": outcome.detail},
            )
        return outcome

    async def resume(self) -> int:
        """At start: ask again for the top-ups left pending on an unreachable provider (not those
        awaiting an operator or a customer). The provider's idempotency makes this safe after a
        crash between its charge and our credit: the same key answers the same, credited once."""
        if not getattr(self.provider, "resumable", False):
            return 0
        waiting = [t for t in await self.ledger.pending_topups() if not t.action_url]
        for t in waiting:
            self.start(TopupRequest(t.reference, t.account_id, t.amount))
        return len(waiting)

    async def close(self) -> None:
        """At shutdown: the charges under way are recorded; those waiting to be asked again stay
        pending for the next start (`resume`)."""
        self._stopping.set()
        await self.drain()

    async def drain(self) -> None:
        """Wait for the payments under way (before the ledger closes)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
