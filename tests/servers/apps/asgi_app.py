"""An asyncio (ASGI) app for ``uvicorn --workers 4`` (each worker a spawned process)."""

from __future__ import annotations

import json
import logging.config
from collections.abc import Awaitable, Callable
from typing import Any

import common

logging.config.dictConfig(common.logging_config())
common.log_import()

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """``GET /?n=N``: log request N; answer with the pid, N and the handler's stats."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps(common.log_request(common.request_number(scope["query_string"].decode())))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
