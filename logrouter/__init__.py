"""logrouter: route Python logging records through RabbitMQ to sinks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RabbitHandler", "__version__"]

if TYPE_CHECKING:
    from logrouter.app.handler import RabbitHandler


def __getattr__(name: str) -> Any:
    # Lazy so that `import logrouter` (CLI, sinks) does not pull in the handler machinery.
    if name == "RabbitHandler":
        from logrouter.app.handler import RabbitHandler

        return RabbitHandler
    raise AttributeError(name)
