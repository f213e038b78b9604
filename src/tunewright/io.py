"""Atomic file writes: a crash never leaves a half-written artifact under its final name."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _tmp_sibling(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes owner-only files; the renamed artifact should get the usual permissions.
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable, not just visible."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; NTFS journals its own metadata
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (network mounts, a few FUSE ones) refuse fsync on a folder; nothing else can be done there.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    # Children before parents: a folder's entry is only worth syncing once what it names is on disk.
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):  # opening a fifo would block; a link is not ours
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _previous(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def recover_dir(final: str | Path) -> Path:
    """Undo a swap that ``atomic_dir`` could not finish; returns ``final``.

    While ``atomic_dir`` replaces a folder, the previous one sits at ``.<name>.old`` beside it. A
    process killed there leaves no folder at ``final``: this moves the previous one back. When
    ``final`` exists, a leftover ``.<name>.old`` is stale (only its deletion was cut short) and is
    removed. ``atomic_dir`` calls this first; a reader that may run after a crash can call it too.
    """
    final = Path(final)
    previous = _previous(final)
    if not os.path.lexists(previous):
        return final
    if os.path.lexists(final):
        shutil.rmtree(previous, ignore_errors=True)
        return final
    try:
        os.replace(previous, final)
    except FileNotFoundError:  # another process recovered it first
        return final
    _fsync_dir(final.parent)
    return final


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final``.

    The folder's files and the folder are fsynced before it is renamed into place, and the parent
    after each rename, so a power cut cannot leave a renamed folder with empty files. An existing
    ``final`` is first renamed to ``.<name>.old``; between that rename and the next, only there is
    a complete folder, and :func:`recover_dir` (run by every later call) puts it back. At every
    instant one complete folder, old or new, is at ``final`` or at ``.<name>.old``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, final)


def _swap_in(tmp: Path, final: Path) -> None:
    previous = _previous(final)
    moved = False
    try:
        if os.path.lexists(final):
            os.replace(final, previous)
            moved = True
            _fsync_dir(final.parent)
        os.replace(tmp, final)
    except BaseException:
        if moved:
            # Put the old folder back now rather than leave readers without one until the next call.
            try:
                os.replace(previous, final)
            except OSError:
                pass  # recover_dir will, on the next call
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final.parent)
    if moved:
        shutil.rmtree(previous, ignore_errors=True)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove we can write there, before any expensive work starts."""
    from .errors import TunewrightError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = _tmp_sibling(path / "probe")
        probe.unlink()
    except OSError as exc:
        raise TunewrightError(f"cannot write to folder: {exc.strerror or exc}", file=path) from None
    return path
