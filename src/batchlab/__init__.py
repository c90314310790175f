"""batchlab: how batch size, learning rate and optimizer shape training."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`batchlab.noise_scale` (the function of `batchlab.noise`), loaded on first use so that `import
    batchlab` stays light."""
    if name == "noise_scale":
        from .noise import noise_scale

        return noise_scale
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
