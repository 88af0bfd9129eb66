"""A separate OS process hammering a ledger (used by tests/test_ledger_processes.py).

    python -m tests.ledger_worker URL PREFIX CALLS SEED [--forever] [--hold SECONDS]

Reserves and settles CALLS calls on account "acme" with random amounts, 100 at a time,
printing "settled <call_id> <cost>" after each acknowledged settle (flushed), so a parent
that kills it knows what was acknowledged. With --hold, every reservation is held that long
before its settle and "held <call_id>" is printed when it is acknowledged.
"""

from __future__ import annotations

import asyncio
import random
import sys

from rating_engine.ledger import make_ledger


async def main(url: str, prefix: str, calls: int, seed: int, forever: bool, hold: float) -> None:
    ledger = make_ledger(url)
    await ledger.open()
    rng = random.Random(seed)
    sem = asyncio.Semaphore(100)

    async def one(i: int) -> None:
        async with sem:
            call_id = f"{prefix}-{i}"
            amount = rng.randint(1_000, 500_000)
            held = await ledger.reserve(call_id, "acme", f"{prefix}{i % 7}", amount, now=1_795_535_109)
            if not held.ok:
                print(f"refused {call_id} {held.refusal}", flush=True)
                return
            if hold:
                print(f"held {call_id}", flush=True)
                await asyncio.sleep(hold)
            cost = rng.randint(1, amount)
            await ledger.settle(call_id, cost, now=1_795_535_200)
            print(f"settled {call_id} {cost}", flush=True)

    i = 0
    while True:
        await asyncio.gather(*(one(j) for j in range(i, i + calls)))
        i += calls
        if not forever:
            break
    await ledger.close()


if __name__ == "__main__":
    hold = float(sys.argv[sys.argv.index("--hold") + 1]) if "--hold" in sys.argv else 0.0
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), "--forever" in sys.argv, hold))
