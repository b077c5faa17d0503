"""The file output: rendered lines in files named by a path template, inside a base dir.

Path templates: ``{facility}/{severity}-%Y-%m-%d.log``. Placeholders take the
record's values, sanitised to one harmless path component each (separators,
``..`` and control characters cannot survive, long values are cut, a leading
``.`` gets a ``_`` before it); strftime directives in the literal parts take
the record's time (UTC, from a validated ``ts``, else the arrival time). The
final path is normalised and checked to stay inside ``base_dir``, and opened
beneath it without following any symlink (``fsio.open_beneath``).

Fan-out is bounded: at most ``max_files`` distinct placeholder values per
writer (per sender when the path names ``{sender}``: senders are broker logins);
records past the cap go, as JSON lines with every field, to ``OVERFLOW_NAME`` in
the base dir.

Files are created with ``file_mode`` (0640, whatever the umask), opened
``O_APPEND``, kept in an LRU of at most ``max_open_files`` descriptors, and
optionally rotated by size or by hour/day to ``name.1`` ... ``name.<keep>``.

Size (over 400 lines): records decoded whole (``write``) and handler batches
decoded into rows of just the keys a line needs (``write_rows``) go through the
same path slots, fan-out cap, append and undo; kept in one writer so the two
entry points cannot disagree on where a record goes (tests/unit/test_file_rows.py
holds them to byte-identical files).
"""

from __future__ import annotations

import contextlib
import os
import re
import string
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import repeat, starmap
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from logrouter.errors import LogrouterError
from logrouter.render import (
    DEFAULT_LINE_FORMAT,
    PATH_PLACEHOLDERS,
    compile_format,
    has_control,
)
from logrouter.sinks.archive import UnencodableRecord, record_line
from logrouter.sinks.base import ABSENT, Record, Refused, WriteError
from logrouter.sinks.files import FilesWriter, record_time
from logrouter.sinks.retention import Retention

if TYPE_CHECKING:
    from logrouter.config import FileOptions

MAX_COMPONENT = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
# directives coarser than an hour: the hour prefix of ts is enough as cache key
_HOURLY = re.compile(r"%[YmdHjyBbAaUWVGuwe%]")
_MAX_CACHE = 4096
#: where records past ``max_files`` go; ``~`` cannot come from a placeholder
OVERFLOW_NAME = "logrouter~overflow.jsonl"


class PathEscapeError(LogrouterError, ValueError):
    """A rendered path would leave the base directory."""


def sanitize_component(value: Any) -> str:
    """``value`` as one safe, visible file-name component (never empty, never a leading ``.``)."""
    text = "-" if value is None else str(value)
    text = _UNSAFE.sub("_", text)[:MAX_COMPONENT]
    if not text:
        return "_"
    if text[0] == ".":
        return "_" + text[: MAX_COMPONENT - 1]
    return text


def inside(base: str, path: str) -> bool:
    """Whether ``path`` is ``base`` or below it (both absolute and normalised)."""
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


class PathTemplate:
    """A compiled path template; ``path_for(record)`` gives an absolute path inside base_dir."""

    def __init__(self, template: str, base_dir: str | os.PathLike[str]) -> None:
        raw_base = os.path.normpath(os.path.abspath(os.fspath(base_dir)))
        self.base = os.path.realpath(raw_base)
        if not os.path.isabs(template):
            template = os.path.join(self.base, template)
        template = os.path.normpath(template)
        if raw_base != self.base and inside(raw_base, template):
            template = self.base + template[len(raw_base) :]
        self.template = template
        self._pieces: list[tuple[str, bool, str | None]] = []
        self.names: list[str] = []
        uses_time = False
        hourly = True
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"bad path template {template!r}: {exc}") from None
        for literal, name, spec, conversion in parsed:
            has_time = "%" in literal
            if has_time:
                uses_time = True
                hourly = hourly and not _HOURLY.sub("", literal).count("%")
            if name is not None and (name not in PATH_PLACEHOLDERS or spec or conversion):
                raise ValueError(
                    f"bad placeholder {{{name}}} in path template {template!r} "
                    f"(allowed: {', '.join('{' + n + '}' for n in PATH_PLACEHOLDERS)})"
                )
            self._pieces.append((literal, has_time, name))
            if name is not None:
                self.names.append(name)
        self._time_key_len = 0 if not uses_time else (13 if hourly else 26)
        #: whether the path depends on the record's time
        self.uses_time = uses_time
        self._cache: dict[tuple[Any, ...], tuple[str, tuple[str, ...]]] = {}
        static = os.path.normpath(os.path.dirname(re.split(r"[{%]", template, maxsplit=1)[0]))
        if not inside(self.base, static):
            raise PathEscapeError(f"path template {template!r} is not inside {self.base}")

    def keys(self, records: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """Per record, what its path depends on (records with equal keys share a file)."""
        columns: list[Any] = [map(dict.get, records, repeat(name)) for name in self.names]
        length = self._time_key_len
        if length:
            stamps = map(dict.get, records, repeat("ts"))
            columns.insert(0, [ts[:length] if isinstance(ts, str) else None for ts in stamps])
        else:
            columns.insert(0, repeat(None, len(records)))
        return list(zip(*columns, strict=False))

    def path_for(self, record: dict[str, Any]) -> str:
        """The absolute file path of ``record``; raises ``PathEscapeError`` if outside base."""
        return self.target(record)[0]

    def target(self, record: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        """``(path_for(record), its placeholder values)``; the values say which fan-out
        slot the record takes (time is not part of them)."""
        ts = record.get("ts")
        tkey = ts[: self._time_key_len] if self._time_key_len and isinstance(ts, str) else None
        key = (tkey, *[record.get(n) for n in self.names])
        try:
            return self._cache[key]
        except (KeyError, TypeError):
            pass
        found = self._build(record)
        try:
            if len(self._cache) >= _MAX_CACHE:
                self._cache.clear()
            self._cache[key] = found
        except TypeError:  # an unhashable foreign value: just don't cache
            pass
        return found

    def _build(self, record: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        when: datetime | None = None
        parts: list[str] = []
        values: list[str] = []
        for literal, has_time, name in self._pieces:
            if has_time:
                if when is None:
                    when = record_time(record.get("ts"))
                literal = when.strftime(literal)
            parts.append(literal)
            if name is not None:
                value = sanitize_component(record.get(name))
                values.append(value)
                parts.append(value)
        path = os.path.normpath("".join(parts))
        if not inside(self.base, path) or path == self.base:
            raise PathEscapeError(f"{path} is not inside {self.base}")
        return path, tuple(values)


# --- the writer --------------------------------------------------------------


def period_key(interval: str | None, epoch: float) -> str:
    """The rotation period (UTC) ``epoch`` falls in: ``YYYYMMDDHH`` or ``YYYYMMDD``."""
    if not interval:
        return ""
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y%m%d%H" if interval == "hour" else "%Y%m%d")


def _text_of(lines: list[str]) -> bytes:
    """Rendered lines as the bytes of one write."""
    return ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")


def rotate_file(path: str, keep: int) -> None:
    """``path`` -> ``path.1`` -> ... -> ``path.<keep>`` (older ones removed; keep 0 = keep all)."""
    if keep <= 0:
        keep = 1
        while os.path.lexists(f"{path}.{keep}"):
            keep += 1
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}.{keep}")
    for index in range(keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}.{index}", f"{path}.{index + 1}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, f"{path}.1")


class FileWriter(FilesWriter):
    """Writes rendered lines to files named by a path template (see the module doc).

    Every ``write`` is one ``os.write`` per file of the batch, and all-or-nothing:
    when one file fails, the files already written by this batch are truncated
    back, so a retry after the condition clears does not duplicate lines. A
    record whose target is refused (``files.TargetRefused``, a path outside the
    base) is returned as refused instead, and the rest is written.
    Rotation (size or time) happens at batch boundaries, in ``checkpoint()``
    (which then reports the new file at size 0), or in ``write`` when no
    checkpoint was taken since the file became due.
    """

    def __init__(self, options: FileOptions, *, instance: str = "") -> None:
        self.options = options
        # {instance} is fixed for the writer's life: fill it in before compiling.
        template = options.path.replace("{instance}", sanitize_component(instance or "0"))
        self.paths = PathTemplate(template, options.base_dir)
        super().__init__(
            self.paths.base, mode=options.file_mode or 0o640, max_open=options.max_open_files
        )
        self.line_format = compile_format(options.format or DEFAULT_LINE_FORMAT)
        self.rotate_bytes = options.rotate_bytes or 0
        self.rotate_interval = options.rotate_interval or None
        self.keep = options.keep
        self.retention = Retention(options.keep_age) if options.keep_age else None
        self.max_files = max(1, options.max_files)
        self.overflow_path = os.path.join(self.paths.base, OVERFLOW_NAME)
        #: fan-out slots taken, per sender when the path names ``{sender}`` (else all
        #: under None): one login's fan-out never sends another's records to overflow
        self._slots: dict[Any, set[tuple[str, ...]]] = {}
        names = self.paths.names
        self._sender_at = names.index("sender") if "sender" in names else None
        #: the keys ``write_rows`` reads of a row (``fastbatch.row_type``): the line
        #: format's and the path's, when all are plain keys, without format specs
        #: and without time in the path; None: this writer takes records alone
        self.row_keys: tuple[str, ...] | None = None
        line_keys = self.line_format.row_keys
        if line_keys is not None and not self.paths.uses_time:
            self.row_keys = tuple(dict.fromkeys((*line_keys, *self.paths.names)))
            self._row_line = attrgetter(*line_keys)
            self._row_path = attrgetter(*self.paths.names) if self.paths.names else None

    # -- Writer ---------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> list[Refused]:
        """Render and append ``records``: one write per file; all-or-nothing but for the
        refused records, returned as ``(index, reason)``; OSError on failure."""
        grouped = self._by_file(records)
        if grouped is not None:
            render_many = self.line_format.render_many
            ready = [
                (
                    path,
                    indices,
                    # the groups split the batch: a group as long as it is all of it
                    _text_of(
                        render_many(
                            records
                            if len(indices) == len(records)
                            else [records[i] for i in indices]
                        )
                    ),
                )
                for path, indices in grouped.items()
            ]
            return self._append_batch(ready, [], "?")
        groups: dict[str, tuple[list[int], list[str]]] = {}
        refused: list[Refused] = []
        target = self.paths.target
        render = self.line_format.render
        for index, record in enumerate(records):
            try:
                path, values = target(record)
            except PathEscapeError as exc:
                refused.append((index, str(exc)))
                continue
            if not self._slot(values):
                path = self.overflow_path
            try:
                line = (
                    record_line(record).decode("utf-8").rstrip("\n")
                    if path == self.overflow_path
                    else render(record)
                )
            except UnencodableRecord as exc:
                refused.append((index, str(exc)))
                continue
            group = groups.get(path)
            if group is None:
                groups[path] = ([index], [line, "\n"])
            else:
                group[0].append(index)
                group[1].extend((line, "\n"))
        chunks = (
            (path, indices, "".join(lines).encode("utf-8", "backslashreplace"))
            for path, (indices, lines) in groups.items()
        )
        return self._append_batch(chunks, refused, "?")

    def write_rows(self, rows: Sequence[Any]) -> list[Refused] | None:
        """``write`` for rows (``fastbatch.row_type`` of ``row_keys``): the lines
        ``write`` renders, without building a dict per record. None, having written
        nothing, for a batch ``write`` takes record by record (a refused path, the
        fan-out limit) or that has characters to escape: the caller then ``write``s
        the records decoded whole."""
        if self.row_keys is None or not rows:
            return None
        if dict in set(map(type, rows)):
            return self._write_mixed(rows)
        by_path: dict[Any, list[int]]
        if self._row_path is None:
            by_path = {(): list(range(len(rows)))}
        else:
            keys = list(map(self._row_path, rows))
            by_path = _indices_by_key(keys, set(keys))
        out: dict[str, list[int]] = {}
        for key, indices in by_path.items():
            try:
                path, taken = self._row_target(key)
            except PathEscapeError:
                return None
            if not self._slot(taken):
                return None
            out[path] = sorted(out[path] + indices) if path in out else indices
        template = self.line_format.template
        row_line = self._row_line
        ready = []
        for path, indices in out.items():
            group = rows if len(indices) == len(rows) else [rows[i] for i in indices]
            lines = list(starmap(template.format, map(row_line, group)))
            if has_control("".join(lines)):
                return None
            ready.append((path, indices, _text_of(lines)))
        return self._append_batch(ready, [], "?")

    def _write_mixed(self, records: Sequence[Any]) -> list[Refused] | None:
        """``write_rows`` for a batch of rows and records (a message that was not a
        batch, a line decoded alone): in delivery order, as ``write`` would; the rows'
        lines rendered at once, their path found once per key."""
        target = self.paths.target
        render = self.line_format.render
        rows = [record for record in records if type(record) is not dict]
        lines_of_rows = list(starmap(self.line_format.template.format, map(self._row_line, rows)))
        if has_control("".join(lines_of_rows)):
            return None
        row_lines = iter(lines_of_rows)
        row_path = self._row_path
        row_keys = iter(map(row_path, rows) if row_path is not None else repeat(()))
        targets: dict[Any, tuple[str, tuple[str, ...]]] = {}
        groups: dict[str, tuple[list[int], list[str]]] = {}
        for index, record in enumerate(records):
            try:
                if type(record) is dict:
                    path, taken = target(record)
                    line = render(record)
                else:
                    key = next(row_keys)
                    line = next(row_lines)
                    found = targets.get(key)
                    if found is None:
                        found = targets[key] = self._row_target(key)
                    path, taken = found
            except PathEscapeError:
                return None
            if not self._slot(taken):
                return None
            group = groups.get(path)
            if group is None:
                groups[path] = ([index], [line])
            else:
                group[0].append(index)
                group[1].append(line)
        ready = [(path, indices, _text_of(lines)) for path, (indices, lines) in groups.items()]
        return self._append_batch(ready, [], "?")

    def _by_file(self, records: Sequence[Record]) -> dict[str, list[int]] | None:
        """The record indices of each file when every record goes to a file of its own
        template (no refusal, no overflow): the batch grouped by key, not record by record.
        None otherwise (``write`` then takes each record in turn)."""
        keys = self.paths.keys(records)
        try:
            distinct = set(keys)
        except TypeError:  # an unhashable foreign value
            return None
        indexes: dict[Any, list[int]] = _indices_by_key(keys, distinct)
        out: dict[str, list[int]] = {}
        for indices in indexes.values():
            try:
                path, values = self.paths.target(records[indices[0]])
            except PathEscapeError:
                return None
            if not self._slot(values):
                return None
            if path in out:  # another key, the same file (sanitised alike): keep the order
                out[path] = sorted(out[path] + indices)
            else:
                out[path] = indices
        return out

    def _slot(self, values: Any) -> bool:
        """Take (or hold already) the fan-out slot of these placeholder values; False
        when ``max_files`` slots are taken by others (of the same sender, with
        ``{sender}`` in the path)."""
        at = self._sender_at
        owner = None if at is None else values[at]
        slots = self._slots.get(owner)
        if slots is None:
            slots = self._slots[owner] = set()
        if values in slots:
            return True
        if len(slots) >= self.max_files:
            return False
        slots.add(values)
        return True

    def _row_target(self, key: Any) -> tuple[str, Any]:
        """(path, slot values) of a row's path key (``_row_path``: a value, or a tuple)."""
        values = key if isinstance(key, tuple) else (key,)
        return self.paths.target(dict(zip(self.paths.names, values, strict=True)))

    # -- rotation -------------------------------------------------------------

    def _sweep(self, retention: Retention) -> None:
        retention.sweep_rotated(self.paths.base, set(self._open))

    def _rotate_due(self, touched: dict[str, int], first: dict[str, int]) -> None:
        now = time.time()
        for path, size in touched.items():
            if self._due(path, size, now):
                # the renamed file holds this uncommitted batch: journal where to cut it
                if self.intent is not None:
                    self.intent(f"{path}.1", first.get(path, ABSENT))
                self._rotate(path)
                touched[path] = 0

    def _append(self, path: str, data: bytes, before: dict[str, int]) -> None:
        if self._touched.get(path) is None and path not in before:
            entry = self._get(path)
            if self._due(path, entry.size, time.time()):
                # due and no checkpoint will rotate it first (its data is committed)
                self._rotate(path)
        super()._append(path, data, before)

    def _period(self, info: os.stat_result) -> str:
        return period_key(self.rotate_interval, info.st_mtime if info.st_size else time.time())

    def _due(self, path: str, size: int, now: float) -> bool:
        if size <= 0:
            return False
        if self.rotate_bytes and size >= self.rotate_bytes:
            return True
        if self.rotate_interval:
            entry = self._open.get(path)
            if entry is not None and entry.period != period_key(self.rotate_interval, now):
                return True
        return False

    def _rotate(self, path: str) -> None:
        # its lines must be durable before they change name
        self._close(path, sync=True)
        try:
            rotate_file(path, self.keep)
        except OSError as exc:
            raise WriteError(path, exc, "rotate") from exc
        self._dirty_closed.discard(path)
        self._dirty_dirs.add(os.path.dirname(path))


def _indices_by_key(keys: Sequence[Any], distinct: set[Any]) -> dict[Any, list[int]]:
    """The indices of ``keys`` grouped by key, in order (``distinct``: the set of them)."""
    if len(distinct) == 1:
        return {keys[0]: list(range(len(keys)))}
    grouped: dict[Any, list[int]] = {}
    for index, key in enumerate(keys):
        found = grouped.get(key)
        if found is None:
            grouped[key] = [index]
        else:
            found.append(index)
    return grouped
