"""Result files, written atomically: a temp file in the same folder, then ``os.replace``.

A crashed or killed run therefore leaves either the previous file or the new one, never
half a file (a killed writer may leave its ``.<name>.*.tmp`` beside it, never under the
real name). Parquet output is deterministic: the same frame gives the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
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


def write_parquet(path: str | Path, frame: pd.DataFrame, index: bool | None = None) -> Path:
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
    """Write one graph output by its type: DataFrame -> Parquet, dict/list -> JSON, str -> text."""
    if isinstance(value, pd.DataFrame):
        return write_parquet(run_dir / f"{name}.parquet", value)
    if isinstance(value, dict | list):
        return write_json(run_dir / f"{name}.json", value)
    if isinstance(value, str):
        return write_text(run_dir / name, value)
    raise TypeError(f"graph output {name!r} is a {type(value).__name__}; expected DataFrame, dict, list or str")
