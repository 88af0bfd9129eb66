"""The payment provider's webhook: no session and no CSRF token (the provider signs each event
instead); a bad signature, a stale timestamp or a body that is not an event gets 400 and writes
nothing; an event seen before, or for an account or object we do not know, is acknowledged and
changes nothing (the provider would otherwise send it again for days)."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..payments.stripe_provider import BadEvent
from .base import site

log = logging.getLogger("rating_engine.web")
MAX_BODY = 512 * 1024


async def stripe_webhook(request: Request) -> Response:
    provider = site(request).runner.provider
    handle = getattr(provider, "handle_webhook", None)
    if handle is None:
        raise HTTPException(404)
    body = await request.body()
    if len(body) > MAX_BODY:
        return JSONResponse({"error": "body too large"}, 413)
    try:
        done = await handle(body, request.headers.get("stripe-signature", ""))
    except BadEvent as exc:
        log.warning("webhook refused", extra={"why": str(exc)})
        return JSONResponse({"error": "bad event"}, 400)
    log.info("webhook", extra={"done": done})
    return JSONResponse({"received": True, "done": done})
