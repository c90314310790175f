"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

import errno


class UsageError(Exception):
    """Bad input from the user (unknown study or key, invalid value, unwritable directory...)."""


def one_line(text) -> str:
    """A message (or an exception's text) on one line: every run of whitespace, newlines too, one space."""
    return " ".join(str(text).split())


def os_error_line(e: OSError) -> str:
    """A file-system failure (a full disk, a folder that cannot be written) as one line: the file, the reason and
    what to do. Whatever was finished before it is kept: units are stored whole, files written atomically."""
    name = f" {e.filename}" if e.filename else ""
    again = "and run the same command again (what was finished is kept)"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return one_line(f"no space left on the device for{name}: free some space (or choose another --out) {again}")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return one_line(f"{e.strerror} for{name}: make it writable (or choose another --out) {again}")
    return one_line(f"{e.strerror}:{name}" if e.strerror and name else e)
