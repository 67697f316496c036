"""Crash-safe file writes: a temporary file in the same folder, flushed, fsynced, renamed.

Every file that must survive a crash (reservoir states, adapters, run files,
results JSON) goes through :func:`atomic_write`: the bytes are written to a
temporary file beside the target, flushed and ``os.fsync``-ed, then moved over
the target with ``os.replace`` (atomic on POSIX within one file system), and
the folder itself is fsynced so the rename survives a power cut. A reader sees
either the old file or the new one, never a torn mix; a killed writer leaves
at most a stray ``.<name>.*.tmp`` file, never a truncated target.

:func:`file_lock` serialises a build that several processes may start at once
(two training workers converting the embedded model on a cold cache): the second
waits for the first, then finds the finished result instead of rebuilding it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would leave: the target's own if it exists,
    else ``0o666`` minus the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    mask = os.umask(0o022)  # read the umask (the only portable way) and put it back
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically (temp file, flush, fsync, ``os.replace``).

    Parameters
    ----------
    path : the target file; its folder is created if missing.
    data : bytes, or str encoded with ``encoding``.

    Returns
    -------
    Path
        The target path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = data.encode(encoding) if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode(path))  # mkstemp makes 0600; a plain write would not
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | Path, doc, indent: int | None = 1) -> Path:
    """``json.dumps(doc)`` (no NaN allowed) written atomically, with a final newline."""
    return atomic_write(path, json.dumps(doc, indent=indent, allow_nan=False) + "\n")


def canonical_safetensors(blob: bytes) -> bytes:
    """``blob`` (a safetensors file) with its ``__metadata__`` keys in sorted order.

    safetensors keeps the metadata in a hash map whose order changes from one map to the
    next, so the same tensors and metadata saved twice give different bytes (and file
    digests). The header is re-serialised compactly with sorted metadata and padded with
    spaces to 8 bytes, as safetensors pads it; the tensor data is untouched (its offsets
    count from the end of the header)."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + n :]


def atomic_save_safetensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> Path:
    """``safetensors.torch.save`` of ``tensors`` (contiguous CPU tensors) written atomically,
    byte for byte the same for the same tensors and metadata (:func:`canonical_safetensors`)."""
    from safetensors.torch import save

    blob = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write(path, canonical_safetensors(blob))


@contextlib.contextmanager
def file_lock(path: str | Path):
    """Hold an exclusive advisory lock (``fcntl.flock``) on ``path`` for the with-block.

    Another process entering the same lock waits until this one leaves it (a killed
    holder releases it: the kernel drops the lock with the file descriptor). Where
    ``fcntl`` does not exist (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on the platforms this project runs on
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
