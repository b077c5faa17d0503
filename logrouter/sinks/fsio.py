"""File-system calls of the writers with files that never go through a link (pure I/O).

``open_beneath`` opens a file relative to a descriptor of the output directory,
every component with ``O_NOFOLLOW`` (a planted symlink is refused, never
followed); the target must be a regular file with one link, and an existing
file must belong to the sink's user. A target refused this way raises
``TargetRefused``: the writer rejects the records for it with the reason.
``rollback_files`` never truncates or removes through a link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence

from logrouter.errors import LogrouterError
from logrouter.sinks.base import WriteError

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_MODE = 0o750
#: errors that mean "this record's target is not a file the sink may write": the
#: records are rejected; any other OSError fails the whole batch (retried later)
REFUSED_ERRNOS = frozenset(
    {
        errno.ELOOP,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EACCES,
        errno.EPERM,
        errno.ENAMETOOLONG,
        errno.ENXIO,
        errno.EEXIST,
    }
)


class TargetRefused(LogrouterError, OSError):
    """A record's target file is not one the sink may write (symlink, directory, ...)."""


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (a regular file takes it in one call unless the disk is full)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _open_dir(name: str, dir_fd: int, mode: int, created: list[int]) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except NotADirectoryError:
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):  # O_NOFOLLOW says ENOTDIR
            raise OSError(errno.ELOOP, "symlink", name) from None
        raise
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=dir_fd)
            created.append(dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def open_beneath(base_fd: int, parts: Sequence[str], mode: int) -> tuple[int, bool, int]:
    """An O_APPEND fd on ``base/<parts...>``, never through a symlink (see the module doc).

    Missing directories are created. Returns ``(fd, created, new_dirs)``:
    whether the file was created (then it is chmod ``mode``, umask-proof) and
    how many directory entries were created (the caller fsyncs their parents).
    Raises ``TargetRefused`` when the target is not a file the sink may write,
    other OSErrors as they come.
    """
    opened: list[int] = []
    made: list[int] = []
    dir_fd = base_fd
    try:
        try:
            for name in parts[:-1]:
                dir_fd = _open_dir(name, dir_fd, DIR_MODE, made)
                opened.append(dir_fd)
            name = parts[-1]
            while True:
                try:
                    fd = os.open(name, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
                    created = True
                except FileExistsError:
                    try:
                        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
                        created = False
                    except FileNotFoundError:
                        continue  # removed between the two opens: create it after all
                break
        except OSError as exc:
            if exc.errno in REFUSED_ERRNOS:
                raise TargetRefused(exc.errno, _reason(exc)) from exc
            raise
        try:
            if created:
                os.fchmod(fd, mode)
            else:
                _check_existing(os.fstat(fd))
        except OSError:
            os.close(fd)
            raise
        return fd, created, len(made) + int(created)
    finally:
        for fd_ in opened:
            os.close(fd_)


def _reason(exc: OSError) -> str:
    code = exc.errno if exc.errno is not None else errno.EIO
    if code == errno.ELOOP:
        return "a symlink is in the way (not followed)"
    return f"{exc.strerror or exc} ({errno.errorcode.get(code, code)})"


def _check_existing(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise TargetRefused(errno.EPERM, "not a regular file")
    if info.st_nlink != 1:
        raise TargetRefused(errno.EPERM, f"a file with {info.st_nlink} hard links")
    if info.st_uid != os.geteuid():
        raise TargetRefused(errno.EPERM, f"owned by uid {info.st_uid}, not the sink's user")


def rollback_files(checkpoint: dict[str, int]) -> None:
    """Truncate each file of ``checkpoint`` to its size (files that vanished are skipped).

    A size of ``ABSENT`` (negative) removes the file: it did not exist before
    the batch that was never committed. Nothing is cut or removed through a link:
    a path whose directory is no longer what it names (a symlink on the way) is
    skipped, the file is opened ``O_NOFOLLOW`` and must be a regular file.
    """
    for path, size in checkpoint.items():
        parent = os.path.dirname(path)
        if os.path.realpath(parent) != parent:
            continue  # a link on the way now: not the file the sink wrote
        if size < 0:
            try:
                os.unlink(path)  # removes a link, never its target
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise WriteError(path, exc, "remove") from exc
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError):
            continue
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                continue  # a link or a FIFO now: not a file the sink wrote
            raise WriteError(path, exc, "truncate") from exc
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_size > size:
                os.ftruncate(fd, size)
                os.fsync(fd)
        except OSError as exc:
            raise WriteError(path, exc, "truncate") from exc
        finally:
            os.close(fd)


def fsync_closed(paths: set[str], directories: set[str]) -> None:
    """fsync files written since the last flush but closed since (LRU, rotation), then
    the directories where files were created; each set is emptied as it is done."""
    for path in list(paths):
        # rotated away, deleted or replaced by a link: nothing of ours left to sync
        _fsync_path(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        paths.discard(path)
    for directory in list(directories):
        fsync_dir(directory)
        directories.discard(directory)


def fsync_dir(directory: str) -> None:
    """fsync a directory (its entries: created, renamed files); missing ones are skipped."""
    _fsync_path(directory, os.O_RDONLY | os.O_DIRECTORY)


def _fsync_path(path: str, flags: int) -> None:
    """Open ``path`` with ``flags`` and fsync it; a path that is gone, a directory where a
    file was, or a link is skipped; other errors raise ``WriteError``."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return
        raise WriteError(path, exc, "fsync") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise WriteError(path, exc, "fsync") from exc
    finally:
        os.close(fd)


def make_dirs(directory: str) -> list[str]:
    """``mkdir -p`` (mode 0750); the parents of every directory created (to fsync)."""
    missing: list[str] = []
    current = directory
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    touched: list[str] = []
    for path in reversed(missing):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path) from None
        touched.append(os.path.dirname(path))
    return touched
