"""The file sink's rows (fastbatch.row_type, FileWriter.write_rows): a batch message
decoded into just the keys the line format and the path read gives files byte-identical
to the records decoded whole, and the same rejects, for any batch body."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from logrouter import batchwire, wire
from logrouter.render import DEFAULT_LINE_FORMAT
from logrouter.sinks.batch import Delivery, Outcome, classify_pending
from logrouter.sinks.dedup import DedupWindow
from logrouter.sinks.file import FileWriter
from logrouter.sinks.output import Output
from tests.unit.test_fastbatch import ODD_LINES, message
from tests.unit.test_fastbatch import line as bare_line
from tests.unit.test_file import options


def line(n: int, record_id: str | None = None, **changes: Any) -> bytes:
    """A handler's batch line (with the logger the default format shows)."""
    return bare_line(n, record_id, **{"logger": "svc", **changes})


def single(tag: int, **changes: Any) -> Delivery:
    """A record published alone (not a batch message)."""
    body = wire.encode({"ts": "2024-05-01T10:00:00Z", "msg": f"alone {tag}", **changes})
    props = SimpleNamespace(
        message_id=f"s{tag}",
        content_type="application/json",
        headers=None,
        timestamp=1_600_000_000,
        app_id="billing",
        user_id="alice",
    )
    return Delivery(tag, "auth.err", body, props, arrival=1_700_000_000.0)


def write(pending: list[Delivery], base: Path, rows: bool, **opts: Any) -> Outcome:
    """Classify ``pending`` (with the writer's row keys or without) and write it as the
    sink does (``Output._write_records``); the writer's files are below ``base``."""
    writer = FileWriter(options(base, **opts))
    outcome = classify_pending(
        pending,
        lambda f, s: s != "debug",
        DedupWindow(10, [("alice", "billing", "r5")]),
        max_record_bytes=1000,
        row_keys=writer.row_keys if rows else None,
    )
    refused = Output._write_records(SimpleNamespace(writer=writer), outcome)  # type: ignore[arg-type]
    outcome.rejected.extend((outcome.source(index), reason) for index, reason in refused)
    writer.flush(True)
    writer.close()
    return outcome


def files(base: Path) -> dict[str, bytes]:
    """Every file below ``base``, by relative path."""
    return {
        os.path.relpath(os.path.join(root, name), base): Path(root, name).read_bytes()
        for root, _, names in os.walk(base)
        for name in names
    }


def assert_same_files(pending: list[Delivery], tmp_path: Path, **opts: Any) -> Outcome:
    """Rows and whole records: the same files, rejects and counts; the rows' outcome."""
    fast = write(pending, tmp_path / "rows", True, **opts)
    slow = write(pending, tmp_path / "whole", False, **opts)
    assert files(tmp_path / "rows") == files(tmp_path / "whole")
    assert fast.rejected == slow.rejected
    assert fast.keys == slow.keys
    assert (fast.duplicates, fast.filtered, fast.suppressed) == (
        slow.duplicates,
        slow.filtered,
        slow.suppressed,
    )
    return fast


def test_a_handler_batch_is_written_from_rows_byte_for_byte(tmp_path: Path) -> None:
    """Handler batch messages (the common case) are taken as rows, and the files hold
    exactly the lines of the records decoded whole."""
    pending = [
        message(1, batchwire.encode_batch([line(n) for n in range(20, 40)])),
        message(2, batchwire.encode_batch([line(n) for n in range(40, 45)]), user="bob"),
    ]
    fast = assert_same_files(pending, tmp_path)
    assert fast.rows == 25 and len(fast.records) == 25
    assert files(tmp_path / "rows")["auth.log"].count(b"\n") == 25


@pytest.mark.parametrize("odd", ODD_LINES)
def test_one_odd_line_among_rows_gives_the_same_files(odd: bytes, tmp_path: Path) -> None:
    """A batch with one odd line (undecodable, to complete, filtered, a duplicate, too
    long, a summary ...): the same files and rejects as with records decoded whole."""
    body = line(30) + b"\n" + odd + b"\n" + line(31) + b"\n"
    fast = assert_same_files([message(1, body)], tmp_path)
    assert len(fast.records) >= 2


def test_an_undecodable_line_is_rejected_alone(tmp_path: Path) -> None:
    """One line of a batch that is not JSON is rejected as that line; the others of the
    message are written."""
    body = batchwire.encode_batch([line(1), line(2)]) + b"{broken\n" + line(3) + b"\n"
    fast = assert_same_files([message(1, body)], tmp_path)
    assert [(d.body, d.line) for d, _ in fast.rejected] == [(b"{broken", True)]
    assert files(tmp_path / "rows")["auth.log"].count(b"\n") == 3


VALUES = [
    {"msg": "tab\tand\x1b[31m red"},  # a character to escape
    {"msg": "two\nlines"},
    {"exc": "Traceback\n  boom"},
    {"stack": "Stack\n  here"},
    {"exc": None},
    {"pid": "77"},
    {"pid": True},
    {"pid": 10**30},
    {"host": ""},
    {"host": "caf\u00e9"},
    {"host": "\x7f"},
    {"logger": 3.5},
    {"msg": ""},
    {"host": "../../etc"},
    {"host": "a/b"},
    {"logger": None},  # absent
]


@pytest.mark.parametrize("changes", VALUES)
@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("{facility}.log", DEFAULT_LINE_FORMAT),
        ("{host}/{app}-{severity}.log", "{ts} {host} {pid} {msg}"),
        ("static.log", "{msg} {id}"),
        ("{facility}-%Y.log", DEFAULT_LINE_FORMAT),  # time in the path: no rows
        ("{facility}.log", "{ts} {severity:<7} {msg}"),  # a spec: no rows
        ("{facility}.log", "{msg}"),  # one key: no rows
        ("{facility}.log", "{ts} {fields} {msg}"),  # not a plain key: no rows
    ],
)
def test_any_value_gives_the_same_files(
    changes: dict[str, Any], path: str, fmt: str, tmp_path: Path
) -> None:
    """Rows or not, for values of every kind (to escape, tracebacks, integers as text,
    empty text, non-ASCII, paths to sanitise) and formats and paths of every kind, in a
    batch mixed with a record published alone: the same files."""
    good = [line(n, host=f"web{n % 2}") for n in range(30, 36)]
    body = batchwire.encode_batch([*good[:3], line(40, **changes), *good[3:]])
    pending = [message(1, batchwire.encode_batch(good)), message(2, body), single(3)]
    assert_same_files(pending, tmp_path, path=path, format=fmt)
    assert_same_files(pending[:2], tmp_path / "batches", path=path, format=fmt)


def test_the_fan_out_limit_gives_the_same_files(tmp_path: Path) -> None:
    """More files than max_files: the overflow file takes the rest, rows or not."""
    pending = [
        message(1, batchwire.encode_batch([line(n, facility=f"f{n % 4}") for n in range(8)]))
    ]
    assert_same_files(pending, tmp_path, max_files=2)
    assert "logrouter~overflow.jsonl" in files(tmp_path / "rows")


@pytest.mark.parametrize("fmt", [DEFAULT_LINE_FORMAT, "{sender} {app} {msg}"])
def test_a_sender_path_keeps_each_login_apart_rows_or_records(fmt: str, tmp_path: Path) -> None:
    """Path {sender}/{app}.log: records claiming one app but sent by two logins (one line
    also claiming a sender of its own) go to each sender's file, none to another's; a
    message without user_id goes to '-'; rows and records decoded whole agree."""
    claim = line(3)[:-1] + b',"sender":"alice"}'
    pending = [
        message(1, batchwire.encode_batch([line(1), line(2)])),
        message(2, batchwire.encode_batch([line(4), claim]), user="mallory"),
        message(3, batchwire.encode_batch([line(5, record_id="r55")]), user=None),  # type: ignore[arg-type]
        single(4, app="billing", sender="alice"),
    ]
    pending[3].properties.user_id = "mallory"
    fast = assert_same_files(pending, tmp_path, path="{sender}/{app}.log", format=fmt)
    assert fast.rows == 2  # alice's message: rows; the others decoded whole
    written = files(tmp_path / "rows")
    assert sorted(written) == ["-/billing.log", "alice/billing.log", "mallory/billing.log"]
    assert written["alice/billing.log"].count(b"\n") == 2
    assert b"login 1" in written["alice/billing.log"]
    assert (
        b"login 3" in written["mallory/billing.log"]
        and b"alone 4" in written["mallory/billing.log"]
    )
    if fmt != DEFAULT_LINE_FORMAT:
        assert written["mallory/billing.log"].startswith(b"mallory billing ")
        assert written["-/billing.log"].startswith(b"- billing ")
