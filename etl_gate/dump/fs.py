"""Where the dump writes: the local filesystem (default) or any pyarrow filesystem.

Everything the dump stage needs from storage, and no more: a stream to write a
file into, made durable on close; an atomic publish (rename); listing and
deletion. ``LocalStorage`` fsyncs the file and its folder; ``ArrowStorage``
wraps a ``pyarrow.fs.FileSystem`` from a URI (``s3://``, ``gs://``,
``hdfs://``; any fsspec protocol when fsspec is installed), where closing a
stream is what makes it durable (an S3 multipart upload completes on close)
and a move is the publish (S3: a server-side copy, which appears whole or not
at all). Paths are plain strings joined with ``/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class StorageError(ValueError):
    """A dump root that cannot be opened."""


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool


class Storage(ABC):
    root: str

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @abstractmethod
    def open_write(self, path: str) -> Any:
        """A binary stream to write a new file into (its folder is created)."""

    @abstractmethod
    def close_durable(self, stream: Any) -> None:
        """Close a stream from ``open_write`` once its bytes are durable."""

    @abstractmethod
    def publish(self, src: str, dst: str) -> None:
        """Move a closed file to its final name, atomically, creating the folder."""

    def write_atomic(self, path: str, data: bytes) -> None:
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        stream = self.open_write(tmp)
        stream.write(data)
        self.close_durable(stream)
        self.publish(tmp, path)

    @abstractmethod
    def read(self, path: str) -> bytes | None:
        """The whole file; None if it does not exist."""

    @abstractmethod
    def list(self, path: str) -> list[Entry]:
        """A folder's entries; [] if it does not exist."""

    @abstractmethod
    def size(self, path: str) -> int: ...

    @abstractmethod
    def delete_file(self, path: str) -> bool:
        """False if it did not exist."""

    @abstractmethod
    def delete_dir(self, path: str) -> bool:
        """A folder and everything in it; False if it did not exist."""

    @abstractmethod
    def delete_empty_dir(self, path: str) -> bool:
        """A folder only if it is empty; False if it was not (or did not exist)."""


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(Path(root).absolute())

    def open_write(self, path: str) -> Any:
        self._makedirs(os.path.dirname(path))
        return open(path, "wb")  # noqa: SIM115  (closed by close_durable)

    def close_durable(self, stream: Any) -> None:
        stream.flush()
        os.fsync(stream.fileno())
        stream.close()

    def publish(self, src: str, dst: str) -> None:
        folder = os.path.dirname(dst)
        # The janitor may remove an expired, empty-looking folder between our
        # makedirs and the rename: make it again and retry.
        for attempt in range(3):
            self._makedirs(folder)
            try:
                os.replace(src, dst)
                break
            except FileNotFoundError:
                if attempt == 2 or not os.path.exists(src):
                    raise
        # The rename is durable once the folder holding the new entry is.
        self._fsync_dir(folder)

    def _makedirs(self, folder: str) -> None:
        """Make a folder and fsync the parents of every folder made, so a crash
        cannot lose a folder that a later published file depends on."""
        missing: list[str] = []
        d = folder
        while d and not os.path.isdir(d):
            missing.append(d)
            d = os.path.dirname(d)
        if not missing:
            return
        os.makedirs(folder, exist_ok=True)
        for made in reversed(missing):
            self._fsync_dir(os.path.dirname(made))

    @staticmethod
    def _fsync_dir(folder: str) -> None:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None

    def list(self, path: str) -> list[Entry]:
        try:
            with os.scandir(path) as it:
                return [Entry(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def delete_file(self, path: str) -> bool:
        try:
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False

    def delete_dir(self, path: str) -> bool:
        if not os.path.isdir(path):
            return False
        shutil.rmtree(path)
        return True

    def delete_empty_dir(self, path: str) -> bool:
        try:
            os.rmdir(path)  # refuses a folder that is not empty: no race with a writer
            return True
        except OSError:
            return False


class ArrowStorage(Storage):
    def __init__(self, fs: Any, root: str, uri: str = "") -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.uri = uri

    def open_write(self, path: str) -> Any:
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        return self.fs.open_output_stream(path)

    def close_durable(self, stream: Any) -> None:
        stream.close()

    def publish(self, src: str, dst: str) -> None:
        for attempt in range(3):
            self.fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
            try:
                self.fs.move(src, dst)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise

    def read(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return bytes(f.read())
        except FileNotFoundError:
            return None

    def list(self, path: str) -> list[Entry]:
        from pyarrow.fs import FileSelector, FileType

        try:
            infos = self.fs.get_file_info(FileSelector(path, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [Entry(i.base_name, i.type == FileType.Directory) for i in infos]

    def size(self, path: str) -> int:
        return int(self.fs.get_file_info(path).size)

    def delete_file(self, path: str) -> bool:
        try:
            self.fs.delete_file(path)
            return True
        except FileNotFoundError:
            return False

    def delete_dir(self, path: str) -> bool:
        try:
            self.fs.delete_dir(path)
            return True
        except FileNotFoundError:
            return False

    def delete_empty_dir(self, path: str) -> bool:
        # Object stores have no atomic "remove if empty"; a writer that loses
        # this race recreates the folder in publish().
        if self.list(path):
            return False
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(path)
        return True


def open_storage(root: str, base_dir: str = ".") -> Storage:
    """The storage for ``dump.root``: a local path (relative to ``base_dir``) or a URI."""
    if "://" not in root:
        return LocalStorage(Path(base_dir, root))
    scheme, rest = root.split("://", 1)
    if scheme == "file":
        return LocalStorage(rest)
    from pyarrow import ArrowInvalid
    from pyarrow.fs import FileSystem

    try:
        fs, path = FileSystem.from_uri(root)
        return ArrowStorage(fs, path, root)
    except ArrowInvalid as e:
        try:
            import fsspec  # type: ignore[import-untyped]
            from pyarrow.fs import FSSpecHandler, PyFileSystem
        except ImportError:
            raise StorageError(f"dump.root: {e} (pyarrow does not know {scheme}://; "
                               f"installing fsspec and its {scheme} driver would add it)") from None
        return ArrowStorage(PyFileSystem(FSSpecHandler(fsspec.filesystem(scheme))), rest, root)
    except OSError as e:
        raise StorageError(f"dump.root: cannot open {root}: {e}") from None
