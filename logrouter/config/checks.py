"""Value checks of the routing config: each takes a TOML value and returns it checked
(and normalised), or raises ``Invalid`` saying what is allowed (pure)."""

from __future__ import annotations

import posixpath
import re
import string
from collections.abc import Callable
from datetime import date, datetime, time
from pathlib import Path

from logrouter.config.model import (
    FORMAT_FIELDS,
    KIB,
    MIB,
    PATH_FIELDS,
    SINK_TYPES,
)
from logrouter.errors import ConfigurationError
from logrouter.render import PATH_TIME_CODES
from logrouter.selector import Selector, compile_selector

_EXCHANGE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,255}\Z")


class Invalid(ConfigurationError, ValueError):
    """A value that is not allowed; the message says what is."""


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date/time"
    return type(value).__name__


def show(value: object) -> str:
    if isinstance(value, dict | list):
        return ""
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return f" ({text})"


def expect_str(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {type_name(value)}{show(value)}")
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {type_name(value)}{show(value)}")
    return value


def choice(*allowed: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = expect_str(value)
        if text not in allowed:
            raise Invalid(f"{text!r} is not allowed (allowed: {', '.join(allowed)})")
        return text

    return check


def int_range(low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {type_name(value)}{show(value)}")
        if not low <= value <= high:
            raise Invalid(f"{value} is out of range (allowed: {low}..{high})")
        return value

    return check


def keep_age(value: object) -> float:
    """``keep = "30d"``: seconds (sinks/retention.py)."""
    from logrouter.sinks.retention import parse_age

    try:
        return parse_age(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def keep_count_or_age(value: object) -> int | float:
    """A file sink's ``keep``: rotated files kept (0..10000), or an age like ``"30d"`` (float)."""
    if isinstance(value, str):
        return keep_age(value)
    return int_range(0, 10_000)(value)


def float_range(low: float, high: float) -> Callable[[object], float]:
    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"expected a number, got {type_name(value)}{show(value)}")
        number = float(value)
        if not low <= number <= high:
            raise Invalid(f"{value} is out of range (allowed: {low:g}..{high:g} seconds)")
        return number

    return check


_SIZE = re.compile(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": KIB, "m": MIB, "g": 1024 * MIB}
MAX_BYTES = 1024**4


def size_value(value: object) -> int:
    """Bytes: an integer, or a string like "64MiB", "10M", "512k" (binary units); 0 = off."""
    if isinstance(value, str):
        found = _SIZE.match(value)
        if not found:
            raise Invalid(f'{value!r} is not a size (e.g. 10485760, "10MiB", "512K", 0 = off)')
        number = int(found.group(1)) * _SIZE_UNITS[found.group(2).lower()]
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise Invalid(f"expected an integer or a size string, got {type_name(value)}{show(value)}")
    if number != 0 and not KIB <= number <= MAX_BYTES:
        raise Invalid(f"{number} bytes is out of range (allowed: 0 = off, or 1KiB..1TiB)")
    return number


def file_mode(value: object) -> int:
    """A permission mode: a string of octal digits ("0640") or a TOML octal (0o640)."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{3,4}", text):
            raise Invalid(f'{value!r} is not an octal mode (e.g. "0640" or "0600")')
        mode = int(text, 8)
    elif isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        raise Invalid(f'expected a string like "0640", got {type_name(value)}{show(value)}')
    if not 0 <= mode <= 0o777:
        raise Invalid(f"mode {mode:o} is out of range (allowed: 0000..0777, no setuid/sticky)")
    if not mode & 0o200:
        raise Invalid(f'mode {mode:04o} does not let the sink write (owner needs w, e.g. "0640")')
    return mode


def line_format(value: object) -> str:
    """A line format: ``str.format`` placeholders among FORMAT_FIELDS, string format specs."""
    text = expect_str(value)
    allowed = " ".join("{" + name + "}" for name in sorted(FORMAT_FIELDS))
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise Invalid(
            f"bad format {text!r}: {exc} (write a literal brace as {{{{ or }}}})"
        ) from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FORMAT_FIELDS:
            raise Invalid(f"unknown placeholder {{{name}}} (allowed: {allowed})")
        if conversion:
            raise Invalid(f"conversion !{conversion} in {{{name}}} is not allowed")
        if spec:
            try:
                format("-", spec)
            except ValueError as exc:
                raise Invalid(f"bad format spec {{{name}:{spec}}}: {exc}") from None
    return text


def path_template(value: object, config_dir: str) -> tuple[str, Path]:
    """The absolute path template and its base directory."""
    text = expect_str(value).strip()
    allowed = " ".join("{" + name + "}" for name in PATH_FIELDS)
    times = " ".join("%" + code for code in PATH_TIME_CODES)
    if not text:
        raise Invalid('empty path (e.g. "/var/log/logrouter/{facility}.log")')
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise Invalid(f"bad path template {text!r}: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PATH_FIELDS or spec or conversion:
            raise Invalid(
                f"unknown placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} in path (allowed: {allowed} and {times})"
            )
    for match in re.finditer(r"%(.?)", text):
        if match.group(1) not in PATH_TIME_CODES + "%":
            raise Invalid(
                f"unknown time code %{match.group(1)} in path (allowed: {times}, %% for '%')"
            )
    components = text.split("/")
    if ".." in components:
        raise Invalid(f"path {text!r} contains '..': it could escape its base directory")
    if text.endswith("/") or components[-1] in ("", "."):
        raise Invalid(f"path {text!r} names a directory; it must name a file")
    full = text if text.startswith("/") else posixpath.join(config_dir, text)
    full = posixpath.normpath(full)
    fixed = re.split(r"[{%]", full, maxsplit=1)[0]
    base = fixed.rpartition("/")[0] or "/"
    return full, Path(base)


def directory(value: object, config_dir: str) -> Path:
    text = expect_str(value).strip()
    if not text:
        raise Invalid('empty directory (e.g. "/var/lib/logrouter/archive")')
    if ".." in text.split("/"):
        raise Invalid(f"directory {text!r} contains '..' (write the directory it means)")
    full = text if text.startswith("/") else posixpath.join(config_dir, text)
    return Path(posixpath.normpath(full))


def sink_type(value: object) -> str:
    try:
        return choice(*SINK_TYPES)(value)
    except Invalid as exc:
        raise Invalid(f"unknown sink type: {exc}") from None


def selector_value(value: object) -> Selector:
    return compile_selector(expect_str(value))


def exchange_name(value: object) -> str:
    name = expect_str(value)
    if not _EXCHANGE_NAME.match(name) or name.startswith("amq."):
        raise Invalid(
            f"{name!r} is not a usable exchange name "
            "(allowed: 1-255 of A-Z a-z 0-9 _ . : -, not starting with 'amq.')"
        )
    return name
