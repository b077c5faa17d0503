"""A Celery app: ``celery -A celery_app worker -c 4 --pool prefork``.

Broker: ``LR_TEST_URL`` (the same RabbitMQ); tasks go to the queue
``LR_TEST_CELERY_QUEUE`` (unique per test). Logging is configured in the
``setup_logging`` signal (Celery's documented hook), i.e. once in the main
process before the pool forks its children.
"""

from __future__ import annotations

import json
import logging.config
import os
from typing import Any

import common
from celery import Celery, signals

QUEUE = os.environ["LR_TEST_CELERY_QUEUE"]
TRACE = os.environ["LR_TEST_TRACE"]  # one JSON line per task run: what a reply says

app = Celery("servers", broker=os.environ["LR_TEST_URL"])
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=4,
)


@signals.setup_logging.connect
def configure_logging(**_: Any) -> None:
    """Configure logging our way (Celery then leaves the root logger alone)."""
    logging.config.dictConfig(common.logging_config())
    common.log_import()


@app.task(name="servers.log")
def log_task(n: int) -> None:
    """Log task ``n`` as a request (one info; every tenth also an error); trace the run."""
    line = json.dumps(common.log_request(n)) + "\n"
    with open(TRACE, "a") as trace:  # one write() of a short line: O_APPEND keeps it whole
        trace.write(line)
