"""connection.redact and friends: passwords hidden in every spelling a URL can take."""

from __future__ import annotations

import pika.exceptions
import pytest

from logrouter.commands.common import broker_failure
from logrouter.connection import (
    BadURL,
    BrokerSettings,
    login,
    redact,
    redact_all,
    validate_url,
)

SECRET = "S3cretPW"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("amqp://guest:S3cretPW@host:5672/%2F", "amqp://guest:***@host:5672/%2F"),
        ("AMQP://guest:S3cretPW@host/", "AMQP://guest:***@host/"),
        ("Amqps://guest:S3cretPW@host/", "Amqps://guest:***@host/"),
        ("https://u:S3cretPW@example.org/x", "https://u:***@example.org/x"),
        ("amqp://guest:S3cret@PW@host/", "amqp://guest:***@host/"),
        ("amqp://guest:S3cret%40PW@host/", "amqp://guest:***@host/"),
        ("amqp://guest:S3cret:PW@host/", "amqp://guest:***@host/"),
        ("amqp://:S3cretPW@host/", "amqp://:***@host/"),
        (
            "urls: amqp://a:S3cretPW@h1/ amqp://b:S3cretPW@h2/",
            "urls: amqp://a:***@h1/ amqp://b:***@h2/",
        ),
        ("amqp://a:S3cretPW@h1/,amqp://b:S3cretPW@h2/", "amqp://a:***@h1/,amqp://b:***@h2/"),
        ("BrokerSettings(urls='amqp://a:S3cretPW@h1')", "BrokerSettings(urls='amqp://a:***@h1')"),
        ("no url here: S3cret", "no url here: S3cret"),
        ("amqp://host:5672/%2F", "amqp://host:5672/%2F"),
    ],
)
def test_redact_hides_the_password_in_every_spelling(text: str, shown: str) -> None:
    """Any scheme and case, '@'/'%40'/':' in the password, several URLs: password gone."""
    assert redact(text) == shown


def test_redact_all_walks_containers_and_reprs() -> None:
    """Nested dicts/lists and arbitrary objects come back without the password."""

    class Holder:
        def __repr__(self) -> str:
            return f"Holder(amqp://u:{SECRET}@h/)"

    value = {"a": ["amqp://u:S3cretPW@h/", ("x", Holder())], "amqp://k:S3cretPW@h": 1}
    assert SECRET not in repr(redact_all(value))


def test_bad_port_error_never_quotes_the_password() -> None:
    """A raw '/' in the password makes urlsplit read part of it as the port: not echoed."""
    with pytest.raises(BadURL) as caught:
        validate_url("amqp://guest:S3cret/PW@host/")
    assert "S3cret" not in str(caught.value)
    assert "%2F" in str(caught.value)


def test_logins_of_the_urls() -> None:
    """The login each URL uses, guest when none is named (what RabbitMQ sees as user_id)."""
    settings = BrokerSettings.from_url("amqp://ops:x@h1/ amqp://h2/ amqp://ops:y@h3/")
    assert settings.logins() == ("ops", "guest")
    assert login("amqp://a%40b:pw@h/") == "a@b"


def test_broker_failure_names_what_is_missing_or_the_error() -> None:
    """A 404 channel close gives the caller's "missing" text; another close and a lost
    connection say so, password-free."""
    missing = "exchange 'logs' does not exist"
    gone = pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no exchange 'logs'")
    refused = pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED")
    lost = pika.exceptions.StreamLostError("amqp://u:hunter2@h/ went away")
    assert broker_failure(gone, missing) == missing
    assert broker_failure(refused, missing).startswith("broker closed the channel: ")
    assert "ACCESS_REFUSED" in broker_failure(refused, missing)
    assert broker_failure(lost, missing).startswith("lost the broker: ")
    assert "hunter2" not in broker_failure(lost, missing)
