"""Write then rename: the one way this package puts a file or a folder in place.

A reader (another worker, a resumed run, a user's tool) never sees a half-written
file: the content goes to a partial file beside the target, which is renamed over
it only when complete. Folders (a report, the demo data set) are filled the same
way, beside their place. The partial name is unique across machines, since
compose replicas on one shared volume are all PID 1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from spheroid_hpo.errors import InputError

__all__ = ["partial_path", "replacing", "replacing_folder", "require_writable", "write_text_atomically"]


def partial_path(path: Path, *, suffix: str = "") -> Path:
    """A hidden, unique sibling of ``path`` to write into before the rename (``suffix`` kept last)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{socket.gethostname()}.{uuid.uuid4().hex[:8]}.partial{suffix}")


def require_writable(path: Path, *, option: str) -> None:
    """InputError naming ``option`` when ``path`` (a file or folder still to be written, with its partial
    sibling) cannot be: its nearest existing folder is read-only or not writable for this user.

    Asked before the work, so a training is not thrown away at its end by an unwritable --out.
    access(2) reports EROFS even to root, whom permission bits do not stop.
    """
    path = Path(path).absolute()
    folders = [path] if path.is_dir() else []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    folders.append(parent)
    for folder in folders:
        if not os.access(folder, os.W_OK | os.X_OK):
            reason = "read-only file system" if _read_only_mount(folder) else "permission denied"
            raise InputError(f"cannot write into {folder} ({reason}); choose a folder you can write for {option}")


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


@contextlib.contextmanager
def replacing(path: Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a partial file to write; on success it replaces ``path``, on any error it is removed.

    ``suffix`` ends the partial file's name, for writers that insist on one (a ``.zip``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path, suffix=suffix)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` by write-then-rename; return ``path``."""
    with replacing(path) as partial:
        partial.write_text(text, encoding=encoding)
    return Path(path)


@contextlib.contextmanager
def replacing_folder(path: Path, *, replace: bool) -> Iterator[Path]:
    """Yield a new hidden sibling folder to fill; on success it takes ``path``'s place, on any error it is removed.

    With ``replace``, an existing ``path`` is renamed aside, the new folder renamed in and the
    old one deleted: readers see the old folder or the new one, never a mix. Without it, ``path``
    must be missing or empty, and a folder another writer filled meanwhile is left as it is
    (``OSError``; the caller says what to do).
    """
    path = Path(path)
    staging = partial_path(path)
    staging.mkdir(parents=True)  # unlike tempfile.mkdtemp, honours the umask
    try:
        yield staging
        if replace and path.exists():
            previous = partial_path(path, suffix=".old")
            os.replace(path, previous)
            os.replace(staging, path)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()  # only ever empty here; renaming onto a folder is not portable
            os.rename(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
