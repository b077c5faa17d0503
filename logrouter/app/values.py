"""Handler option values from dictConfig strings, with errors naming the option (pure).

Every option of ``RabbitHandler`` may come as a string (dictConfig, fileConfig,
Django's ``LOGGING``); a value that is not what the option takes raises
``ValueError`` saying which option and what it got, never a bare "invalid literal
for int()".
"""

from __future__ import annotations


def number(option: str, value: object) -> float:
    """A finite number >= 0."""
    try:
        parsed = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{option}: {value!r} is not a number") from None
    if parsed < 0 or parsed != parsed or parsed == float("inf"):
        raise ValueError(f"{option}: {value!r} must be a finite number >= 0")
    return parsed


def whole(option: str, value: object) -> int:
    """A whole number >= 0 ("3" and "3.0" are 3; "2.5" is refused, not cut to 2)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    parsed = number(option, value)
    if not parsed.is_integer():
        raise ValueError(f"{option}: {value!r} is not a whole number")
    return int(parsed)
