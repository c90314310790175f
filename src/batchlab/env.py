"""The environment a run was measured in, recorded beside every result."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from pathlib import Path

import torch

from . import __version__


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
    """The commit of batchlab's own source checkout ("+dirty" if it has uncommitted changes).

    None for an installed package, even one that sits inside some other git repository (a virtual
    environment inside a user's project must not record the project's commit as batchlab's).
    """
    package = Path(__file__).resolve().parent
    top = _git("rev-parse", "--show-toplevel", cwd=package)
    if not top or package not in (Path(top).resolve() / "src" / "batchlab", Path(top).resolve() / "batchlab"):
        return None
    commit = _git("rev-parse", "--short=12", "HEAD", cwd=package)
    if not commit:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=package)
    return commit + ("+dirty" if dirty else "")


@functools.lru_cache(maxsize=None)
def source_hash() -> str:
    """SHA-256 (12 hex digits) of batchlab's own Python source, file names and contents in order: which code
    produced a result when there is no git checkout (an installed package)."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def code_version() -> str:
    """The git commit of a source checkout, else the package version and the hash of its source."""
    return git_commit() or f"{__version__}+src.{source_hash()}"


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    import numpy

    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "batchlab": __version__,
        "git_commit": git_commit(),
        "code_version": code_version(),
        "source_hash": source_hash(),
        "platform": platform.platform(),
    }
