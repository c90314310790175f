"""`python -m batchlab ...`, and the `batchlab` command's entry point: light, so that Ctrl-C while the CLI's modules
(torch among them: seconds) are still being imported ends like every other Ctrl-C, with one line and exit code 130."""

import sys

from .interrupts import exit_with, stop_once_on_ctrl_c


def main() -> None:
    stop_once_on_ctrl_c()
    try:
        from .cli import run_cli
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted while starting; nothing was written\n")
        exit_with(130)
    exit_with(run_cli())


if __name__ == "__main__":
    main()
