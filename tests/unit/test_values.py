"""values: option values from dictConfig strings, errors naming the option (pure)."""

from __future__ import annotations

import pytest

from logrouter.app.values import number, whole


def test_numbers_from_strings_and_numbers() -> None:
    """Strings and numbers parse alike; whole numbers may be written "3.0"."""
    assert number("x", "2.5") == 2.5 and number("x", 0) == 0.0
    assert whole("x", "3") == 3 and whole("x", "3.0") == 3 and whole("x", 7) == 7


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "burst: 'abc' is not a number"),
        (None, "burst: None is not a number"),
        ("-1", "burst: '-1' must be a finite number >= 0"),
        ("nan", "burst: 'nan' must be a finite number >= 0"),
        ("inf", "burst: 'inf' must be a finite number >= 0"),
        ("2.5", "burst: '2.5' is not a whole number"),
        (-3, "burst: -3 must be a finite number >= 0"),
    ],
)
def test_bad_values_name_the_option_and_the_value(value: object, message: str) -> None:
    """What is refused, and the words a user reads."""
    with pytest.raises(ValueError) as caught:
        whole("burst", value)
    assert str(caught.value) == message
