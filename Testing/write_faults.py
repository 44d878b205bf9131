"""Writes that fail partway, for the tests of the files the product rewrites (test_rewrite_faults.py).

Two faults, each limited to one folder (the rewritten file's), so the test's own files are untouched:

- ``"torn"``: every file opened for writing there (``open``, ``Path.write_text/bytes``, ``os.fdopen`` of a
  ``mkstemp`` descriptor, SimpleITK's ``WriteImage``) gets the first half of the bytes it is given, then the
  write raises ENOSPC, as on a full disk. A rewrite in place leaves a truncated file; an atomic one (temp file
  + rename) leaves the old file whole.
- ``"rename"``: ``os.replace`` (``Path.replace`` too) into that folder raises EIO, the last step of an atomic
  write. A rewrite in place never renames, so it does not fail: the test sees no error and a changed file.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

import pytest

FAULTS = ("torn", "rename")


def _target_of(file) -> Path | None:
    """The path of ``open``'s first argument (a path or a descriptor; Linux names a descriptor's file)."""
    if isinstance(file, int):
        try:
            return Path(os.readlink(f"/proc/self/fd/{file}"))
        except OSError:
            return None
    try:
        return Path(os.fsdecode(file))
    except TypeError:
        return None


class _TornFile:
    """A file object whose first ``write`` stores half of its data, then raises ENOSPC."""

    def __init__(self, f) -> None:
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def inject(monkeypatch: pytest.MonkeyPatch, fault: str, folder: Path) -> None:
    """Make writes into ``folder`` fail the ``fault`` way (see the module docstring) until the test ends."""
    folder = Path(folder).resolve()

    def inside(path) -> bool:
        return path is not None and Path(os.path.abspath(path)).resolve().parent == folder

    if fault == "torn":
        real_open = io.open

        def torn_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            return _TornFile(f) if any(m in mode for m in "wxa+") and inside(_target_of(file)) else f

        monkeypatch.setattr(io, "open", torn_open)
        monkeypatch.setattr(builtins, "open", torn_open)
        import SimpleITK as sitk

        real_write_image = sitk.WriteImage

        def torn_write_image(image, filename, *args, **kwargs):
            real_write_image(image, filename, *args, **kwargs)
            if inside(filename):
                os.truncate(filename, os.path.getsize(filename) // 2)
                raise RuntimeError(f"Exception thrown in SimpleITK WriteImage: {os.strerror(errno.ENOSPC)}")

        monkeypatch.setattr(sitk, "WriteImage", torn_write_image)
    elif fault == "rename":
        real_replace = os.replace

        def failing_replace(src, dst, *args, **kwargs):
            if inside(dst):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", failing_replace)
    else:
        raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")


def folder_state(folder: Path) -> dict[str, bytes]:
    """{name: bytes} of every file in ``folder`` (temp files included: none may be left behind)."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
