"""Ctrl-C in the `batchlab` process: the first one stops the work, later ones are ignored, and the exit is final.

The first raises KeyboardInterrupt as Python's own handler does; what it starts (keeping the state of the runs in
training, closing the store, the one line saying what was kept) must finish, so a second Ctrl-C, pressed while
waiting for it, cannot cut it short or kill the process by SIGINT: it exits 130 either way, as it says. Light (no
imports beyond the standard library): it is installed before the CLI's modules, torch among them, are imported.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys


def _stop_once(signum, frame) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def stop_once_on_ctrl_c() -> None:
    """Install the handler, unless Ctrl-C is not Python's default here (ignored in a background job, or a caller's
    own handler): that choice is kept."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop_once)


def exit_with(code: int) -> None:
    """End the process with `code`, which nothing can change any more.

    The command's work is done and its line printed, so a Ctrl-C from here on is ignored: pressed while the
    interpreter shuts down (torch's and matplotlib's modules take a moment), it used to end the process by SIGINT,
    exit status -2, after a successful run. And after an interrupt, CPython itself may re-raise SIGINT at exit when
    the KeyboardInterrupt passed through C code that ran Python (it did 2 s into start-up, inside torch's import,
    after our one line was printed): so an interrupted command flushes its output, runs the exit handlers and
    leaves with os._exit(130), which no such flag can turn into a death by signal."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code != 130:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(130)
