"""The environment a run was measured in, recorded beside every result."""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

from . import __version__


@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


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
        "platform": platform.platform(),
    }
