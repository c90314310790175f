"""`python -m batchlab ...` is the `batchlab` command."""

from .cli import main

if __name__ == "__main__":
    main()
