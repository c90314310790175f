"""The task kinds that ship with batchlab (importing this module registers them)."""

from . import branches, checkpoint, curvature, equivalence, gradients, variants  # noqa: F401
