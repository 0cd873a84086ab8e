"""Where a study lives: the journal file written in fsynced groups, or an Optuna URL.

The journal is one JSON record per line. It survives torn writes: a write that fails
(a full disk) is cut back to the last complete record before the run stops, and a last
line cut off by a killed writer is removed when the journal is next opened (said once).
A damaged line anywhere else is an error naming the line: replaying past it would
rebuild a different study.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dask_pipeline.errors import DaskPipelineError
from dask_pipeline.redaction import redact


class JournalError(DaskPipelineError):
    """The study journal cannot be written (a full disk) or holds a damaged record (named by line)."""


class JournalFlock:
    """An exclusive ``flock`` on ``<journal>.flock``: the lock of a study's journal file.

    The kernel releases it when its process dies, so a driver killed in the middle of a
    write (SIGKILL) leaves no stale lock for the next driver to wait out (Optuna's default
    symlink lock is only broken after a 30 s grace period). On a filesystem without
    ``flock``, give ``tune.storage`` a database URL instead.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Block until this process holds the lock."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock back."""
        import fcntl

        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@functools.cache
def group_commit_journal() -> type:
    """The class ``GroupCommitJournal`` (made on first use: Optuna is imported by the driver only)."""
    from optuna.storages.journal import BaseJournalBackend

    class GroupCommitJournal(BaseJournalBackend):
        """A journal file whose appends can be grouped: one locked, fsynced write per group.

        It reads and writes the file format of Optuna's ``JournalFileBackend`` (one JSON record
        per line), and checks every record it reads. Outside ``group()`` each append is locked,
        written and fsynced on its own. Inside, the file lock is held for the whole group, appends
        are kept in memory, reads see the file and then the kept lines (so the storage's
        replay, trial ids included, is what it will be once written), and leaving the group
        writes them in one ``write`` and one ``fsync``. Holding the lock keeps other drivers
        on the same file from appending in between, so every process replays the same order.

        The driver groups what it does between two waits on the cluster. If it dies inside a
        group, that group's lines are lost as a whole and the file ends at the previous group:
        a trial it had created is then absent, or RUNNING under a dead driver (re-queued on
        resume); a trial it had told is re-run. Nothing is half-written and nothing is told
        COMPLETE twice.
        """

        def __init__(self, path: str | Path, lock: Any = None, echo: Any = None):
            self.path = str(path)
            self._lock = lock if lock is not None else (JournalFlock(f"{path}.flock") if os.name == "posix" else None)
            with self._locked():
                open(self.path, "ab").close()  # create it if it does not exist
                removed = cut_torn_tail(self.path)
            if removed and echo is not None:
                echo(f"note: study journal {self.path}: its last record was cut off by an interrupted write "
                     f"({removed} bytes); removed it, the study continues from the record before")
            self._in_file = 0  # records of the file read so far
            self._offset = 0  # bytes of the file read so far: whole lines only
            self._pending: list[str] | None = None  # lines of the open group
            self._pending_logs: list[dict[str, Any]] = []
            self.commits = 0  #: fsynced writes of groups so far
            self._file_read_in_group = False

        @contextlib.contextmanager
        def _locked(self) -> Iterator[None]:
            if self._lock is None:
                yield
                return
            self._lock.acquire()
            try:
                yield
            finally:
                self._lock.release()

        def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
            if not self._file_read_in_group:  # inside a group the file cannot change after one read
                yield from self._read_file(log_number_from)
                self._file_read_in_group = self._pending is not None
            yield from self._pending_logs[max(0, log_number_from - self._in_file):]

        def _read_file(self, log_number_from: int) -> Iterator[dict[str, Any]]:
            if log_number_from < self._in_file:  # asked to replay from earlier: read from the start
                self._in_file = self._offset = 0
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            # Bytes after the last newline are a write in progress (another driver's) or torn:
            # not a record yet either way.
            lines = data.split(b"\n")[:-1]
            for line in lines:
                number = self._in_file
                try:
                    log = json.loads(line)
                    if not isinstance(log, dict) or "op_code" not in log:
                        raise ValueError("a JSON value, but not an Optuna journal record")
                except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                    shown = line[:60].decode(errors="replace")
                    raise JournalError(
                        f"{self.path}, line {number + 1}: not a journal record ({' '.join(str(exc).split())}; "
                        f"starts {shown!r}); the study cannot be replayed past it: restore the journal, or "
                        "set tune.study_name / tune.storage for a new study") from None
                self._in_file += 1
                self._offset += len(line) + 1
                if number >= log_number_from:
                    yield log

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            if self._pending is None:
                with self._locked():
                    append_lines(self.path, [json.dumps(log, separators=(",", ":")) for log in logs])
                return
            for log in logs:
                line = json.dumps(log, separators=(",", ":"))
                self._pending.append(line)
                self._pending_logs.append(json.loads(line))  # as a reader of the file will see it

        @contextlib.contextmanager
        def group(self) -> Iterator[None]:
            """Hold the lock; keep appends; write them with one fsync at the end (nested: no-op)."""
            if self._pending is not None or self._lock is None:
                yield
                return
            self._lock.acquire()
            self._pending, self._pending_logs = [], []
            self._file_read_in_group = False
            try:
                yield
            finally:
                lines, self._pending = self._pending, None
                try:
                    if lines:
                        append_lines(self.path, lines)
                        self.commits += 1
                finally:
                    self._pending_logs, self._file_read_in_group = [], False
                    self._lock.release()

    return GroupCommitJournal


def append_lines(path: str, lines: list[str]) -> None:
    """Append ``lines`` to the journal in one write and fsync (the caller holds its lock).

    A failed write or fsync (a full disk) is cut back to where the file ended, so the
    journal stays whole records only, and raises ``JournalError``.
    """
    data = memoryview(("\n".join(lines) + "\n").encode())
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
                os.fsync(fd)
            raise JournalError(f"{path}: cannot write the study journal ({exc.strerror or exc}); it is intact up to "
                               "its last complete record: free the space and rerun to continue the study") from None
    finally:
        os.close(fd)


def cut_torn_tail(path: str) -> int:
    """Truncate the journal to its last complete line (the caller holds its lock); return the bytes removed."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    return size - end


def make_storage(cfg: Any, echo: Any = None) -> Any:
    """The study's storage: a journal file (default ``<run>/study.journal``, written through
    ``group_commit_journal()``; ``echo`` hears if a torn last record was removed) or an Optuna URL."""
    from optuna.storages.journal import JournalStorage

    target = cfg.tune.storage
    if target is not None and "://" in target:
        return target
    path = Path(target) if target is not None else cfg.run_dir / "study.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(group_commit_journal()(path, echo=echo))


@contextlib.contextmanager
def storage_group(study: Any) -> Iterator[None]:
    """Group the study's storage writes (``GroupCommitJournal.group``) where it has one."""
    backend = getattr(study._storage, "_backend", None)
    with backend.group() if isinstance(backend, group_commit_journal()) else contextlib.nullcontext():
        yield


def storage_name(cfg: Any) -> str:
    """Where the study lives, for messages and records (a URL's password masked)."""
    target = cfg.tune.storage
    return redact(target) if target is not None else str(cfg.run_dir / "study.journal")
