"""The task kinds that ship with batchlab (importing this module registers them)."""

from . import branches, checkpoint, curvature, equivalence, gradients, sharpness, variants  # noqa: F401
