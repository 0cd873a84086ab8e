"""Where a study lives: the journal file written in fsynced groups, or an Optuna URL."""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dask_pipeline.redaction import redact


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

        Outside ``group()`` it is Optuna's ``JournalFileBackend`` (each append locked, written
        and fsynced on its own). Inside, the file lock is held for the whole group, appends
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

        def __init__(self, path: str | Path, lock: Any = None):
            from optuna.storages.journal import JournalFileBackend

            self.path = str(path)
            self._lock = lock if lock is not None else (JournalFlock(f"{path}.flock") if os.name == "posix" else None)
            self._file = JournalFileBackend(self.path, lock_obj=self._lock)
            self._in_file = 0  # lines of the file read so far
            self._pending: list[str] | None = None  # lines of the open group
            self._pending_logs: list[dict[str, Any]] = []
            self.commits = 0  #: fsynced writes of groups so far
            self._file_read_in_group = False

        def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
            start = min(log_number_from, self._in_file)
            if not self._file_read_in_group:  # inside a group the file cannot change after one read
                for number, log in enumerate(self._file.read_logs(start), start=start):
                    self._in_file = number + 1
                    if number >= log_number_from:
                        yield log
                self._file_read_in_group = self._pending is not None
            yield from self._pending_logs[max(0, log_number_from - self._in_file):]

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            if self._pending is None:
                self._file.append_logs(logs)
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
                        with open(self.path, "ab") as f:
                            f.write(("\n".join(lines) + "\n").encode())
                            f.flush()
                            os.fsync(f.fileno())
                        self.commits += 1
                finally:
                    self._pending_logs, self._file_read_in_group = [], False
                    self._lock.release()

    return GroupCommitJournal


def make_storage(cfg: Any) -> Any:
    """The study's storage: a journal file (default ``<run>/study.journal``, written through
    ``group_commit_journal()``) or an Optuna URL."""
    from optuna.storages.journal import JournalStorage

    target = cfg.tune.storage
    if target is not None and "://" in target:
        return target
    path = Path(target) if target is not None else cfg.run_dir / "study.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(group_commit_journal()(path))


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
