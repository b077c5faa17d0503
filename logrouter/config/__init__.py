"""The routing config (TOML): ``load_config`` / ``parse_config`` give a ``RoutingConfig``
or raise ``ConfigError`` listing every issue (file, line, sink, key, message).

The package splits the work: ``model`` (keys, defaults, dataclasses, issue and
error types), ``positions`` (where a key is in the text; TOML syntax error
positions), ``checks`` (one function per kind of value), ``validate`` (the
tables into the model, every issue collected) and ``loader`` (file -> text ->
TOML -> validator). Everything a caller needs is importable from here.
"""

from logrouter.config import model
from logrouter.config.loader import load_config, parse_config
from logrouter.config.model import *  # noqa: F403 - the model is the package's interface
from logrouter.render import DEFAULT_CONSOLE_FORMAT, PATH_TIME_CODES

__all__ = [
    *model.__all__,
    "DEFAULT_CONSOLE_FORMAT",
    "PATH_TIME_CODES",
    "load_config",
    "parse_config",
]
