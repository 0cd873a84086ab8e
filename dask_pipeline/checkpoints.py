"""Checkpoints: values saved by the worker that computed them, read back only when authentic.

A checkpoint file is ``MAGIC``, then an HMAC-SHA256 of the rest under the folder's key,
then the dask-pipeline version and the pickled value. The key is 32 random bytes made for
each checkpoint folder when its run starts, kept in ``<folder>/key`` (0600, in a 0700
folder, owned by the user). A file is unpickled only after its HMAC checks out, so a
flipped bit, a truncated file, or a pickle someone planted in the folder is refused with
the file named, and nothing in it runs. The HMAC is also the checkpoint's content hash.

The folders live under ``<run>/checkpoints/<config digest>/``; ``clear`` removes exactly
that structure (regular files in digest-named folders) and refuses anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import pickle
import re
import secrets
from pathlib import Path
from typing import Any

from dask_pipeline.errors import CheckpointError

MAGIC = b"DPCKPT1\n"
KEY_FILE = "key"
_MAC_BYTES = 32
_DIGEST = re.compile(r"[0-9a-f]{16}")

#: Keys made in this process for folders that have no key file yet (the first save writes it).
_NEW_KEYS: dict[str, bytes] = {}


def folder_key(folder: str | Path) -> bytes:
    """The key of a checkpoint folder: read from its key file, or a new one for a new folder.

    Raises
    ------
    CheckpointError
        The folder or its key is not this user's alone (owned by another user, writable or
        readable by others), or the key file is damaged: nothing in it can be trusted.
    """
    folder = Path(folder)
    key_path = folder / KEY_FILE
    if not os.path.lexists(key_path):
        if folder.is_dir() and any(p.name != KEY_FILE for p in folder.iterdir()):
            raise CheckpointError(f"{folder}: holds checkpoints without a key (from an older dask-pipeline or not "
                                  "written by a run): they cannot be verified; rerun without --resume")
        return _NEW_KEYS.setdefault(str(folder), secrets.token_bytes(32))
    _check_private(folder, key_path)
    key = key_path.read_bytes()
    if len(key) != 32:
        raise CheckpointError(f"{key_path}: damaged checkpoint key ({len(key)} bytes); rerun without --resume")
    return key


def forget_keys(root: str | Path) -> None:
    """Drop the keys made in this process for folders under ``root`` (after ``clear``)."""
    prefix = str(Path(root))
    for folder in [f for f in _NEW_KEYS if f == prefix or f.startswith(prefix + os.sep)]:
        del _NEW_KEYS[folder]


def _check_private(folder: Path, key_path: Path) -> None:
    if os.name != "posix":
        return
    for path, others in ((folder, 0o022), (key_path, 0o077)):
        st = os.lstat(path)
        if st.st_uid != os.geteuid():
            raise CheckpointError(f"{path}: owned by another user; its checkpoints cannot be trusted "
                                  "(rerun without --resume, or choose another output.run_name)")
        if st.st_mode & others:
            raise CheckpointError(f"{path}: other users may change it (mode {st.st_mode & 0o777:o}); its checkpoints "
                                  "cannot be trusted (rerun without --resume)")


def save(value: Any, path: str | Path, key: bytes) -> Any:
    """Write ``value`` to ``path`` authenticated with ``key`` (temp file + rename); return ``value``."""
    import dask_pipeline
    from dask_pipeline.results import atomic_path

    path = Path(path)
    body = dask_pipeline.__version__.encode() + b"\0" + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        _ensure_folder(path.parent, key)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(MAGIC + _mac(key, body) + body)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write the checkpoint ({exc.strerror or exc}); "
                              "free the space or fix the folder, then rerun with --resume") from None
    return value


def _ensure_folder(folder: Path, key: bytes) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    key_path = folder / KEY_FILE
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if key_path.read_bytes() != key:
            raise CheckpointError(f"{key_path}: another run's key; two runs are writing {folder}") from None
        return
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: str | Path, key: bytes) -> Any:
    """The value ``save`` wrote at ``path``, once its HMAC under ``key`` checks out.

    Raises
    ------
    CheckpointError
        Unreadable, damaged, truncated, written with another key or by another version.
    """
    import dask_pipeline

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    head = len(MAGIC) + _MAC_BYTES
    body = data[head:]
    if len(data) < head or not data.startswith(MAGIC) or not hmac.compare_digest(data[len(MAGIC):head],
                                                                                  _mac(key, body)):
        raise CheckpointError(f"{path}: checkpoint fails its integrity check (damaged, truncated, or not written by "
                              "this run); nothing was loaded from it; rerun without --resume")
    version, _, payload = body.partition(b"\0")
    if version.decode(errors="replace") != dask_pipeline.__version__:
        raise CheckpointError(f"{path}: written by dask-pipeline {version.decode(errors='replace')}, this is "
                              f"{dask_pipeline.__version__}; rerun without --resume")
    return pickle.loads(payload)


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def clear(root: str | Path) -> None:
    """Delete the checkpoints under ``root`` (``<run>/checkpoints``) and ``root`` itself.

    Only the layout checkpoints make is deleted: regular files inside folders named by a
    config digest. Anything else (a link, another name, a nested folder) is refused, and a
    folder that cannot be cleared (read-only, another user's files) is an error: a run that
    silently kept old checkpoints could load them.

    Raises
    ------
    CheckpointError
        Naming what could not be removed, or what was not a checkpoint.
    """
    root = Path(root)
    forget_keys(root)
    if not os.path.lexists(root):
        return
    hint = f"remove {root} yourself, or choose another output.run_name"
    if root.is_symlink() or not root.is_dir():
        raise CheckpointError(f"{root}: not a checkpoint folder (a file or a link); {hint}")
    try:
        for child in sorted(os.scandir(root), key=lambda e: e.name):
            if not (child.is_dir(follow_symlinks=False) and _DIGEST.fullmatch(child.name)):
                raise CheckpointError(f"{child.path}: not a checkpoint folder of dask-pipeline; {hint}")
            for entry in os.scandir(child.path):
                if not entry.is_file(follow_symlinks=False):
                    raise CheckpointError(f"{entry.path}: not a checkpoint file; {hint}")
                os.unlink(entry.path)
            os.rmdir(child.path)
        os.rmdir(root)
    except OSError as exc:
        where = exc.filename or root
        raise CheckpointError(f"{where}: cannot clear the checkpoints of an earlier run ({exc.strerror}); "
                              f"{hint}") from None
