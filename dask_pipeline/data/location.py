"""Where a bar store lives: a local directory, or an fsspec URL (``s3://``, ``gs://``, ``file://``...).

A root holding ``://`` is a URL, opened with ``fsspec.core.url_to_fs``; anything else is
a local path. Both go through one :class:`StoreLocation`, so the store reads, lists and
writes the same way everywhere; pyarrow reads local files through its native
filesystem and everything else through fsspec (``PyFileSystem(FSSpecHandler(fs))``).

Connection settings and credentials never come from the config. fsspec and the storage
library take them from the environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``,
``GOOGLE_APPLICATION_CREDENTIALS``...) or from fsspec's own config files and
``FSSPEC_<PROTOCOL>_<OPTION>`` variables, so nothing secret ends up in ``config.yaml``
or ``run.json``; a URL carrying a password is refused (:func:`check_url`).

Object stores keep listings in a per-process cache; a store rewritten by another process
(a worker that outlives several runs) would be listed, and sized, from stale entries. So
every listing here first drops the cached entries of the prefix it is about to list.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from dask_pipeline.errors import DaskPipelineError, DataError

PathLike = str | os.PathLike


def is_url(root: PathLike) -> bool:
    """Whether ``root`` is an fsspec URL (``s3://bucket/bars``) rather than a local path."""
    return "://" in str(root)


def check_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is a URL this machine can open.

    Checks that every protocol of the (possibly chained, ``simplecache::s3://...``) URL is
    known to fsspec and its library is installed, that it names a location, and that it
    carries no password (it would be written to ``config.yaml``; use the environment).
    """
    import fsspec

    parts = url.split("::")
    for part in parts:
        protocol = part.partition("://")[0]
        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError:
            raise ValueError(
                f"unknown storage protocol {protocol!r} in {url!r} (e.g. s3://bucket/prefix, gs://, file://)"
            ) from None
        except ImportError as exc:
            raise ValueError(f"{protocol}:// needs a library that is not installed: {exc}") from None
    target = urlsplit(parts[-1])
    if not (target.netloc or target.path.strip("/")):
        raise ValueError(f"{url!r} names no bucket or path")
    if target.password is not None:
        raise ValueError(
            f"{target.scheme}://{target.hostname}...: credentials in the URL would be written to config.yaml "
            "and run.json; set them in the environment (e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )


@dataclass(frozen=True)
class StoreLocation:
    """A store root opened on its filesystem.

    Attributes
    ----------
    fs
        The fsspec filesystem (``LocalFileSystem`` for a local path or ``file://`` URL).
    path
        The root as ``fs`` names it (absolute, no protocol); paths below it join with ``/``.
    shown
        The root as the user gave it; errors name paths under it with this prefix.
    """

    fs: Any
    path: str
    shown: str

    @property
    def local(self) -> bool:
        """Whether the store is on a local (or locally mounted) filesystem."""
        from fsspec.implementations.local import LocalFileSystem

        return isinstance(self.fs, LocalFileSystem)

    def join(self, *names: str) -> str:
        """The filesystem path of ``<root>/<names...>``."""
        return "/".join([self.path.rstrip("/"), *names])

    def name_of(self, path: str) -> str:
        """``path`` (a filesystem path under the root) as errors show it: under the root as given."""
        return self.shown + path[len(self.path.rstrip("/")):] if path.startswith(self.path) else path

    def arrow_filesystem(self) -> Any:
        """The filesystem to hand pyarrow: its native one for local files, else fsspec wrapped."""
        import pyarrow.fs

        if self.local:
            return pyarrow.fs.LocalFileSystem()
        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(self.fs))

    def listing(self, path: str) -> list[dict[str, Any]]:
        """``fs.ls(path, detail=True)`` from the store itself, not from a cached listing."""
        self.fs.invalidate_cache(path)
        return self.fs.ls(path, detail=True)

    def kind(self, path: str) -> str | None:
        """``"directory"``, ``"file"``, or None when nothing is at ``path`` (fresh, not cached)."""
        self.fs.invalidate_cache(path)
        try:
            return self.fs.info(path)["type"]
        except FileNotFoundError:
            return None

    def create(self, path: str) -> IO[bytes]:
        """A new file to write at ``path``.

        Local files are created exclusively (``x``) with the umask's permissions, so workers
        running as another user can read them; an object is uploaded when the file closes.
        """
        if self.local:
            return open(path, "xb")
        return self.fs.open(path, "wb")

    def publish(self, staged: str, final: str) -> None:
        """Move a complete ``staged`` file over ``final``; readers see the old file or the new, never a part.

        Locally ``os.replace`` (an atomic rename); on an object store a server-side copy then
        a delete of ``staged``: a PUT or COPY replaces an object atomically, so ``final`` is
        never half-written there either.
        """
        if self.local:
            os.replace(staged, final)
        else:
            self.fs.mv(staged, final)

    def discard(self, paths: Iterable[str | None]) -> None:
        """Best-effort removal of temp files (an error while cleaning up must not hide the first one)."""
        for path in paths:
            if path is None:
                continue
            with contextlib.suppress(Exception):
                if self.local:
                    os.unlink(path)
                else:
                    self.fs.rm_file(path)

    @contextlib.contextmanager
    def failures(self, doing: str) -> Iterator[None]:
        """Turn a storage failure inside the block into a one-line ``DataError`` naming the root.

        Local failures are ``OSError``; object-store clients also raise their own
        exceptions (``botocore``'s connection errors, ``aiohttp``'s...), all wrapped here.
        """
        try:
            yield
        except DaskPipelineError:
            raise
        except OSError as exc:
            raise DataError(f"{self.shown}: cannot {doing} ({one_line(exc)})") from None
        except Exception as exc:
            if self.local:
                raise
            raise DataError(f"{self.shown}: cannot {doing} ({one_line(exc)})") from None


def locate(root: PathLike) -> StoreLocation:
    """Open ``root`` (a local path or an fsspec URL) on its filesystem.

    Raises
    ------
    DataError
        The URL's protocol is unknown or its library is missing.
    """
    import fsspec
    from fsspec.implementations.local import make_path_posix

    text = os.fspath(root)
    if not is_url(text):
        # Named as the store always named local roots, str(Path(root)): "a//b/" -> "a/b";
        # never un-chained as a URL would be ("::" is a legal character in a file name).
        return StoreLocation(fsspec.filesystem("file"), make_path_posix(text), str(Path(text)))
    shown = text.rstrip("/") or text
    try:
        fs, path = fsspec.core.url_to_fs(text)
    except (ValueError, ImportError) as exc:
        raise DataError(f"{shown}: cannot open this data root ({one_line(exc)})") from None
    return StoreLocation(fs, path, shown)


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its message, else its class name."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text and not isinstance(exc, OSError) else text or type(exc).__name__
