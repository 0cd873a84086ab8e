"""Result files and run folders, written so that no reader ever sees a mix.

A file is written to a temp file beside it (created with the umask's permissions),
fsynced and renamed over its name: a writer killed at any point leaves the previous file
or the new one, never half of one.

A run folder is published as one: :class:`RunFolder` writes every file of a run into a
hidden sibling (``.<run>.staging-*``), writes ``run.json`` last with a manifest of every
file's SHA-256, and then swaps the staged folder in with one atomic exchange
(``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames, and a run killed between
them is rolled back to the previous folder by the next run). A reader therefore finds the
previous complete folder or the new complete one; ``verify_run_folder`` checks a folder
against its manifest. :class:`RunLock` keeps two runs out of one folder at a time; a
killed run's lock goes with its process.

Only what runs wrote is ever replaced or deleted: a folder holding anything else is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dask_pipeline.errors import OutputError

RECORD = "run.json"
#: Files every run writes besides its graph outputs, and what a report adds later.
RECORDS = ("run.json", "config.yaml", "stages.json", "dask-report.html", "report.html", "figures", "plots")
#: What lives in a run folder across runs: the default study journal, checkpoints of an interrupted run.
STATE = ("study.journal", "study.journal.flock", "checkpoints")
#: Built from the other files after ``run.json`` (``dask-pipeline report`` rebuilds them): not in the manifest.
DERIVED = ("report.html", "figures")

_STAGING, _OLD = "staging", "old"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    try:
        yield tmp
        # On disk before it is published: after a power cut the new name never points at a
        # file whose blocks were not written yet.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _new_temp(path: Path) -> Path:
    # Created here rather than by mkstemp (always 0600): mode 0666 less the umask, as
    # open() gives, so colleagues read results exactly when the umask says they may.
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
            return tmp
        except FileExistsError:
            continue


def write_parquet(path: str | Path, frame: Any, index: bool | None = None) -> Path:
    """Write ``frame`` to ``path`` atomically (zstd, no wall-clock metadata)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, engine="pyarrow", compression="zstd", index=index)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_output(run_dir: Path, name: str, value: Any) -> Path:
    """Write one graph output by its type: DataFrame -> Parquet, dict/list -> JSON, str -> text, bytes -> as is.

    ``name`` is a file name or a relative path inside ``run_dir`` (``plots/history.png``);
    one that would leave the folder (``../x``, ``/tmp/x``) is refused.
    """
    import pandas as pd

    inside(run_dir, name, "graph output")
    if isinstance(value, pd.DataFrame):
        return write_parquet(run_dir / f"{name}.parquet", value)
    if isinstance(value, dict | list):
        return write_json(run_dir / f"{name}.json", value)
    if isinstance(value, str):
        return write_text(run_dir / name, value)
    if isinstance(value, bytes):
        return write_bytes(run_dir / name, value)
    raise TypeError(f"graph output {name!r} is a {type(value).__name__}; expected DataFrame, dict, list, str or bytes")


def inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name``, or ``OutputError`` when ``name`` is not a plain relative path that stays in ``folder``."""
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in parts) or "\0" in name:
        raise OutputError(f"{what} {name!r}: expected a plain file name or a relative path inside {folder}")
    return folder / name


# -- run folders ---------------------------------------------------------------------------------


class RunFolder:
    """A run's results folder, written as one: stage every file, seal it with ``run.json``, publish.

    ``with RunFolder(run_dir) as folder:`` creates the staging folder; ``folder.write(...)``
    adds files to it; ``folder.seal(record)`` writes ``run.json`` (the record plus the manifest);
    ``folder.publish()`` swaps the staged folder in for ``run_dir``. Leaving the block without
    publishing (an error, Ctrl-C) removes the staging folder and leaves ``run_dir`` as it was.

    Parameters
    ----------
    run_dir
        The folder to publish; its parent must exist or be creatable.
    keep
        Names in the current ``run_dir`` that live across runs (``study.journal``): linked
        into the new folder before the swap, so they survive it.
    """

    def __init__(self, run_dir: str | Path, keep: Iterable[str] = ("study.journal",)):
        self.run_dir = Path(run_dir)
        self.keep = tuple(keep)
        self.staging: Path | None = None
        self.sealed = False

    def __enter__(self) -> RunFolder:
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        self.staging = _sibling(self.run_dir, _STAGING)
        os.mkdir(self.staging)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.staging is not None:
            remove_tree(self.staging)
            self.staging = None

    def path(self, name: str) -> Path:
        """Where ``name`` goes in the staging folder (checked to stay inside it)."""
        assert self.staging is not None, "RunFolder used outside its with block"
        return inside(self.staging, name, "result file")

    def write(self, name: str, value: Any) -> Path:
        """Stage one output (``write_output``'s rules); returns its path in the staging folder."""
        assert self.staging is not None, "RunFolder used outside its with block"
        return write_output(self.staging, name, value)

    def seal(self, record: dict[str, Any], redact: Any = None) -> Path:
        """Write ``run.json``: ``record`` plus ``files``, every staged file's SHA-256 (the completeness marker).

        ``files`` is added to ``record`` itself too, so the caller holds what ``run.json`` says.
        """
        assert self.staging is not None, "RunFolder used outside its with block"
        record["files"] = manifest(self.staging)
        text = json.dumps(record, indent=2, default=str)
        self.sealed = True
        return write_text(self.staging / RECORD, (redact(text) if redact else text) + "\n")

    def publish(self) -> Path:
        """Swap the sealed staging folder in for ``run_dir`` and remove the previous folder."""
        assert self.staging is not None and self.sealed, "seal() the run before publishing it"
        for name in self.keep:
            carry(self.run_dir / name, self.staging / name)
        previous = swap_in(self.staging, self.run_dir)
        self.staging = None
        if previous is not None:
            remove_tree(previous)
        return self.run_dir


def manifest(folder: Path) -> dict[str, str]:
    """``{relative path: sha256 hex}`` of every file in ``folder`` except ``run.json``, derived files and state."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        top = relative.split("/", 1)[0]
        if path.is_file() and not path.is_symlink() and top not in (RECORD, *DERIVED, *STATE):
            found[relative] = file_sha256(path)
    return found


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(run_dir: Path) -> dict[str, Any]:
    """``run_dir/run.json`` as a dict; ``OutputError`` naming the file when it is missing, a folder or not JSON."""
    path = run_dir / RECORD
    if not path.exists():
        raise OutputError(f"{run_dir}: not a finished run folder (no {RECORD})")
    if not path.is_file():
        raise OutputError(f"{path}: is a folder, not a run record; this is not a folder a run wrote")
    try:
        record = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise OutputError(f"{path}: not a run record (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise OutputError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(record, dict):
        raise OutputError(f"{path}: not a run record (expected a JSON object)")
    return record


def verify_run_folder(run_dir: str | Path) -> dict[str, Any]:
    """Check that every file ``run.json`` lists is there with the bytes the run wrote; return the record.

    A record without a manifest (a run of an older version) is returned unchecked.

    Raises
    ------
    OutputError
        ``run.json`` missing or unreadable, or a listed file missing or changed (named).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OutputError(f"{run_dir}: not a run folder (no such directory)")
    record = read_record(run_dir)
    files = record.get("files")
    if not isinstance(files, dict):
        return record
    for relative, expected in sorted(files.items()):
        path = run_dir / relative
        if not path.is_file():
            raise OutputError(f"{path}: missing; {run_dir / RECORD} lists it, so this folder is not one complete run")
        if file_sha256(path) != expected:
            raise OutputError(f"{path}: not the file this run wrote (its SHA-256 differs from {RECORD}'s): "
                              "damaged or from another run; rerun the config")
    return record


def check_replaceable(run_dir: Path) -> None:
    """Raise ``OutputError`` unless ``run_dir`` is absent or holds only what runs write.

    A run replaces its folder whole, so anything in it that no run wrote (a user's notes,
    another tool's files, a folder where ``run.json`` should be) would be deleted: refused
    before the run computes anything, naming the first such entry.
    """
    if not os.path.lexists(run_dir):
        return
    if run_dir.is_symlink() or not run_dir.is_dir():
        raise OutputError(f"{run_dir}: exists and is not a folder; move it away or choose another output.run_name")
    try:
        entries = sorted(os.listdir(run_dir))
    except OSError as exc:
        raise OutputError(f"{run_dir}: cannot read the results folder ({exc.strerror or exc})") from None
    known = set(RECORDS) | set(STATE)
    if RECORD in entries:
        record = read_record(run_dir)
        for listed in (record.get("outputs") or [], record.get("files") or {}):
            known.update(str(name).split("/", 1)[0] for name in listed)
    foreign = [e for e in entries if e not in known and not (e.startswith(".") and e.endswith(".tmp"))]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        why = "" if RECORD in entries else f" (no {RECORD}: not a folder a finished run wrote)"
        raise OutputError(f"{run_dir}: holds {shown}, which no run wrote{why}; a run replaces its whole folder, "
                          "so move them away or choose another output.run_name")


def swap_in(staging: Path, target: Path) -> Path | None:
    """Make ``staging`` the folder at ``target`` in one step; return where the previous folder went (or None)."""
    if not os.path.lexists(target):
        os.rename(staging, target)
        fsync_dir(target.parent)
        return None
    if _exchange(staging, target):
        fsync_dir(target.parent)
        return staging
    # No atomic exchange on this platform or filesystem: between these two renames there is
    # no folder at ``target`` (never a mixed one); ``recover`` puts the previous one back.
    previous = _sibling(target, _OLD)
    os.rename(target, previous)
    os.rename(staging, target)
    fsync_dir(target.parent)
    return previous


def recover(run_dir: Path) -> list[str]:
    """Clean up after a run killed while publishing ``run_dir``; return what was done, for a note.

    A folder between the two renames of a non-atomic swap is renamed back; staging folders
    and previous folders not yet removed are deleted (only ``.<run>.staging-*`` / ``.old-*``).
    """
    try:
        return _recover(run_dir)
    except OSError as exc:
        raise OutputError(f"{run_dir}: cannot clean up after an interrupted run ({exc.strerror or exc}: "
                          f"{exc.filename})") from None


def _recover(run_dir: Path) -> list[str]:
    parent, done = run_dir.parent, []
    if not parent.is_dir():
        return done
    prefix = f".{run_dir.name}."
    leftovers = sorted(parent / n for n in os.listdir(parent) if n.startswith(prefix)
                       and n[len(prefix):].split("-", 1)[0] in (_STAGING, _OLD))
    olds = [p for p in leftovers if p.name[len(prefix):].startswith(_OLD)]
    if not os.path.lexists(run_dir) and olds:
        os.rename(olds[-1], run_dir)
        leftovers.remove(olds[-1])
        done.append(f"restored {run_dir} from an interrupted publish")
    for path in leftovers:
        remove_tree(path)
        done.append(f"removed {path.name}, left by an interrupted run")
    return done


def carry(source: Path, destination: Path) -> None:
    """Put the file ``source`` at ``destination`` too: a hard link (same bytes, no copy), else a copy."""
    if not source.is_file() or source.is_symlink():
        return
    try:
        os.link(source, destination)
    except OSError:
        with atomic_path(destination) as tmp:
            shutil.copyfile(source, tmp)


def remove_tree(path: Path) -> None:
    """Best-effort removal of a folder this package made (a link is unlinked, never followed)."""
    with contextlib.suppress(OSError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a local folder, so the names created or moved in it survive a power cut.

    Best effort: some filesystems (network, FUSE) refuse fsync on a folder; the files were synced.
    """
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a libc older than glibc 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # a filesystem without exchange (NFS, some FUSE)
    raise OSError(error, os.strerror(error), str(b))


# -- one run at a time ---------------------------------------------------------------------------


class RunLock:
    """An exclusive lock on ``<output.dir>/.<run>.lock`` for the whole run.

    A second run into the same folder fails at once with ``OutputError`` naming the run that
    holds it. The lock is a ``flock``: the kernel drops it when its process dies, so a
    killed run never leaves it stuck. On release the lock file, and the folders made only to
    hold it, are removed again: a run that fails early leaves nothing behind.
    """

    def __init__(self, run_dir: str | Path, describe: str = ""):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir.parent / f".{self.run_dir.name}.lock"
        self.describe = describe
        self._fd: int | None = None
        self._made: list[Path] = []

    def __enter__(self) -> RunLock:
        try:
            return self._acquire()
        except OSError as exc:  # a full disk, a read-only folder
            raise OutputError(f"{self.run_dir}: cannot lock the results folder ({exc.strerror or exc}: "
                              f"{self.path})") from None

    def _acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: runs are not kept apart
            return self
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._made = missing
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputError(f"{self.run_dir}: another run is writing this folder ({holder}); wait for it "
                                  "to finish, or choose another output.run_name") from None
            except OSError:
                os.close(fd)  # a filesystem without flock: runs are not kept apart there
                return self
            # The previous holder may have removed the file between our open and our lock.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, self._holder().encode())
        self._fd = fd
        return self

    def _holder(self) -> str:
        started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        what = f"{self.describe}, " if self.describe else ""
        return f"{what}pid {os.getpid()} on {socket.gethostname()}, started {started}"

    def __exit__(self, *exc: Any) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still held: a waiting opener sees a new inode and retries
        os.close(fd)
        for folder in self._made:
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 1000, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "a run that is starting"
