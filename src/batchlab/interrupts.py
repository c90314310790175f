"""Ctrl-C in the `batchlab` process: the first one stops the work, later ones are ignored.

The first raises KeyboardInterrupt as Python's own handler does; what it starts (keeping the state of the runs in
training, closing the store, the one line saying what was kept) must finish, so a second Ctrl-C, pressed while
waiting for it, cannot cut it short or kill the process by SIGINT: it exits 130 either way, as it says. Light (no
imports beyond the standard library): it is installed before the CLI's modules, torch among them, are imported.
"""

from __future__ import annotations

import signal


def _stop_once(signum, frame) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def stop_once_on_ctrl_c() -> None:
    """Install the handler, unless Ctrl-C is not Python's default here (ignored in a background job, or a caller's
    own handler): that choice is kept."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop_once)
