"""Files written atomically: readers see the old file or the whole new one, never a partial write."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``.

    Creates the parent directory. Readers see either the old file or the complete new one, never a
    partial write; on error the temporary file is removed, and an OSError (a full disk, a read-only folder)
    names `path` or the folder that refused it, not the temporary file (a write's own error names none).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(_blamed(path, e))) from None
        raise
    return path


def _blamed(path: Path, e: OSError) -> Path:
    """The file a failed write names: the folder that refused it (the nearest existing one), else the file."""
    if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
        return path
    folder = path.parent
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def atomic_write_text(path: Path, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))
