"""A WSGI app that configures logging at import, as Django and most apps do.

``gunicorn wsgi_app:app``: with ``--preload`` the master imports it (and logs the
``import`` record) before forking the workers.
"""

from __future__ import annotations

import json
import logging.config
from collections.abc import Callable, Iterable
from typing import Any

import common

logging.config.dictConfig(common.logging_config())
common.log_import()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``GET /?n=N``: log request N; answer with the pid, N and the handler's stats."""
    body = json.dumps(common.log_request(common.request_number(environ["QUERY_STRING"])))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]
