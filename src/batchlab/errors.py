"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class UsageError(Exception):
    """Bad input from the user (unknown study or key, invalid value, unwritable directory...)."""


def one_line(text) -> str:
    """A message (or an exception's text) on one line: every run of whitespace, newlines too, one space."""
    return " ".join(str(text).split())
