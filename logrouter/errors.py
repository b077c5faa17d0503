"""The one base of logrouter's own exceptions, and the exit code each maps to.

Every exception logrouter raises on purpose derives from ``LogrouterError``;
``exit_code`` (a class attribute, overridable per instance) is what a command
exits with when the error ends it: 1 runtime, 2 usage, 78 config
(``logrouter.exitcodes``). ``cli.main`` turns an escaped ``LogrouterError``
into its message on stderr and that code, in one place.
"""

from __future__ import annotations

from logrouter import exitcodes


class LogrouterError(Exception):
    """Base of every logrouter exception; ``exit_code`` is the command's exit code."""

    exit_code: int = exitcodes.RUNTIME


class UsageError(LogrouterError):
    """A bad command line or argument value (exit 2)."""

    exit_code = exitcodes.USAGE


class ConfigurationError(LogrouterError):
    """A config that cannot be used or read (exit 78, EX_CONFIG)."""

    exit_code = exitcodes.CONFIG
