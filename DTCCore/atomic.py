"""Atomic file writes: a reader sees the old file or the new one, never a part, and a failed write leaves
no temp file behind. Every file the product writes goes through here (configs, checkpoints, manifests,
label tables, evaluation tables, previews); ``io.write_image`` uses the same temp-file-then-rename scheme
with SimpleITK's writer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import DTCError


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and an atomic rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one, never a part."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DTCError(f"cannot write to folder {path.parent} ({exc.strerror}); choose a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600 files; give the user's usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        silent_unlink(tmp)
        raise DTCError(f"cannot write {path} ({exc.strerror}); free disk space or choose another folder") from None
    except BaseException:
        silent_unlink(tmp)
        raise


def atomic_copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically: the copy is made in a temp file next to ``target``, flushed to
    disk, then renamed; an interrupted copy (disk full, a killed process) leaves no part of ``target``."""
    target = Path(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise DTCError(f"cannot write to folder {target.parent} ({exc.strerror}); choose a writable folder") from None
    try:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except OSError as exc:
        silent_unlink(tmp)
        raise DTCError(f"cannot copy {source} to {target} ({exc.strerror}); free disk space or choose another "
                       "folder") from None
    except BaseException:
        silent_unlink(tmp)
        raise


def default_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def silent_unlink(path: str) -> None:
    """Remove ``path`` if it exists; errors are ignored (cleanup of temp files)."""
    try:
        os.unlink(path)
    except OSError:
        pass
