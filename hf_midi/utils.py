"""Small shared helpers: whole-or-nothing writes of files and folders (nothing half-written is ever left
on disk), and the one answer to "is this reference a path or a Hub repo id?".

One policy for every write that must be whole: write beside the target, fsync the files, then rename
into place. ``atomic_write_bytes`` (a file) and ``atomic_folder`` (a folder that replaces another)
are it; the trainer's checkpoints and exports follow the same policy with ``fsync_files`` but rename
themselves, because every process of a run writes into the checkpoint folder and an export lands
beside the run's checkpoints and logs (hf_midi/training/trainer.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fsync_files(folder: str | os.PathLike) -> None:
    """fsync every file below ``folder``, so that a rename that follows publishes data on disk."""
    for f in Path(folder).rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_folder(out: str | os.PathLike):
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` whole (readable by all,
    as mkdtemp's 0700 is not), on any error it is removed and ``out`` is untouched.

    The swap keeps one complete folder at ``out`` at every moment but one rename: an existing ``out``
    is first renamed aside, the new one renamed in, and only then is the old one deleted (put back if
    the second rename fails)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        fsync_files(tmp)
        tmp.chmod(0o755)
        for f in tmp.rglob("*"):
            f.chmod(0o644 if f.is_file() else 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old / out.name, out)
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# A Hub repo id: "name" or "owner/name" of letters, digits, "-", "_" and ".".
_REPO_ID = re.compile(r"[\w-][\w.-]*(/[\w-][\w.-]*)?")


def is_repo_id(ref: str) -> bool:
    """Whether ``ref`` reads as a Hub repo id (``gpt2``, ``user/name``); says nothing of whether it exists."""
    return bool(_REPO_ID.fullmatch(ref)) and ".." not in ref


def locate(ref: str | os.PathLike) -> str:
    """Where a model or dataset reference points: ``"local"`` (it exists on disk), ``"hub"`` (it does
    not, and reads as a Hub repo id) or ``"missing"`` (a path that is not there: ``./x``, ``/a/b``,
    ``a/b/c``). Every loader asks this one function."""
    text = os.fspath(ref)
    if Path(text).expanduser().exists():
        return "local"
    return "hub" if is_repo_id(text) else "missing"


__all__ = ["atomic_folder", "atomic_write_bytes", "fsync_files", "is_repo_id", "locate"]
