"""The crash journal of a sink: committed sizes and ids survive a restart."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from logrouter.sinks.dedup import DedupKey
from logrouter.sinks.journal import Journal, entry_line, parse_journal, state_dir


def k(message_id: str) -> DedupKey:
    """A dedup key of an app's message (user_id, app_id, message_id)."""
    return ("app-user", "app", message_id)


def test_state_is_empty_for_a_new_journal(tmp_path: Path) -> None:
    """A sink started for the first time remembers nothing."""
    journal = Journal(tmp_path, "logrouter.x", keep_ids=10)
    state = journal.open()
    journal.close()
    assert state.checkpoint == {}
    assert state.ids == []


def test_commits_survive_reopen_and_merge_sizes(tmp_path: Path) -> None:
    """After a restart the journal gives the newest size of each file and the last ids."""
    journal = Journal(tmp_path, "logrouter.x", keep_ids=3)
    journal.open()
    journal.commit({"/a": 10}, [k("1"), k("2")], fsync=True)
    journal.commit({"/b": 5}, [k("3")], fsync=False)
    journal.commit({"/a": 20}, [k("4"), k("5")], fsync=True)
    journal.close()
    state = Journal(tmp_path, "logrouter.x", keep_ids=3).open()
    assert state.checkpoint == {"/a": 20, "/b": 5}
    assert state.ids == [k("3"), k("4"), k("5")]


def test_torn_last_line_is_ignored() -> None:
    """A line cut in half by SIGKILL is skipped: its batch was never acked."""
    lines = [entry_line({"/a": 10}, [k("1")]), b'{"c": {"/a": 99}, "ids": ["2"']
    state = parse_journal(lines, keep_ids=10)
    assert state.checkpoint == {"/a": 10}
    assert state.ids == [k("1")]


def test_compaction_keeps_the_state(tmp_path: Path) -> None:
    """When the journal outgrows its limit it is rewritten as one line with the same state."""
    journal = Journal(tmp_path, "logrouter.x", keep_ids=5, compact_bytes=300)
    journal.open()
    for n in range(100):
        journal.commit({"/a": n}, [k(str(n))], fsync=False)
    journal.close()
    assert journal.path is not None
    assert journal.path.stat().st_size < 600
    state = Journal(tmp_path, "logrouter.x", keep_ids=5).open()
    assert state.checkpoint == {"/a": 99}
    assert state.ids == [k("95"), k("96"), k("97"), k("98"), k("99")]


def test_second_instance_gets_its_own_journal(tmp_path: Path) -> None:
    """Two processes of one sink on one host never share a journal (flock slots)."""
    first = Journal(tmp_path, "logrouter.x", keep_ids=5)
    second = Journal(tmp_path, "logrouter.x", keep_ids=5)
    first.open()
    second.open()
    try:
        assert first.path != second.path
    finally:
        first.close()
        second.close()


def test_peer_ids_are_what_the_other_instances_committed(tmp_path: Path) -> None:
    """An instance sees the ids its sibling on this host committed (to drop a batch the
    sibling wrote but had not acked when it died), never its own."""
    first = Journal(tmp_path, "logrouter.x", keep_ids=5)
    second = Journal(tmp_path, "logrouter.x", keep_ids=5)
    first.open()
    second.open()
    try:
        first.commit({}, [k("a1"), k("a2")], fsync=False)
        second.commit({}, [k("b1")], fsync=False)
        assert second.peer_ids() == {k("a1"), k("a2")}
        assert first.peer_ids() == {k("b1")}
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LOGROUTER_STATE_DIR": "/s", "STATE_DIRECTORY": "/x"}, Path("/s")),
        ({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, Path("/var/lib/a")),
        ({"XDG_STATE_HOME": "/h"}, Path("/h/logrouter")),
    ],
)
def test_state_dir_order(env: dict[str, str], expected: Path) -> None:
    """The state directory comes from LOGROUTER_STATE_DIR, systemd, then XDG."""
    assert state_dir(env) == expected


def test_compaction_is_not_repeated_on_every_commit(tmp_path: Path) -> None:
    """A snapshot larger than the compaction threshold (a big dedup window) does not make
    every later commit rewrite the whole journal: the file grows between compactions."""
    journal = Journal(tmp_path, "logrouter.x", keep_ids=1000, compact_bytes=100)
    journal.open()
    for n in range(1000):
        journal.commit({}, [k(f"id-{n:06d}")], fsync=False)
    assert journal.path is not None
    size = journal.path.stat().st_size
    journal.commit({}, [k("one-more")], fsync=False)
    assert journal.path.stat().st_size > size
    journal.close()
    assert Journal(tmp_path, "logrouter.x", keep_ids=1000).open().ids[-1] == k("one-more")


def test_a_commit_of_more_keys_than_the_window_is_remembered_whole(tmp_path: Path) -> None:
    """A batch of more keys than ``keep_ids`` (a batch message of many lines) keeps all
    of them through compaction and a restart: it is the batch a lost ack redelivers."""
    journal = Journal(tmp_path, "logrouter.x", keep_ids=3, compact_bytes=50)
    journal.open()
    journal.commit({"/a": 1}, [k("old")], fsync=False)
    big = [k(f"big-{n}") for n in range(8)]
    journal.commit({"/a": 2}, big, fsync=False)
    journal.close()
    assert Journal(tmp_path, "logrouter.x", keep_ids=3).open().ids == big
    assert parse_journal([entry_line({}, [k("old")]), entry_line({}, big)], 3).ids == big


def test_ids_of_an_older_journal_are_keys_without_sender() -> None:
    """A journal written before keys had a sender (bare message ids) still loads: each id
    becomes ("", "", id), which only ever matches a message without user_id and app_id."""
    state = parse_journal([b'{"c": {}, "ids": ["7", ["u", "a", "8"], 9]}\n'], keep_ids=10)
    assert state.ids == [("", "", "7"), ("u", "a", "8")]


def test_journal_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """Under umask 022 the state directory the journal creates is 0700 and its files
    (journal, lock) are 0600: they list output paths and message ids."""
    old = os.umask(0o022)
    try:
        journal = Journal(tmp_path / "state" / "sinks", "logrouter.x", keep_ids=10)
        journal.open()
        journal.commit({"/a": 1}, [k("1")], fsync=True)
        journal.close()
    finally:
        os.umask(old)
    for directory in (tmp_path / "state", tmp_path / "state" / "sinks"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted((tmp_path / "state" / "sinks").iterdir())
    assert [f.name for f in files] == ["logrouter.x.journal", "logrouter.x.lock"]
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
