"""batchlab: how batch size, learning rate and optimizer shape training."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`batchlab.noise_scale` (the function of `batchlab.noise`), `batchlab.sharpness` (`batchlab.curvature`),
    `batchlab.critical_batch` (the measured answer, batchlab.driver.critical) and `batchlab.load_metrics` (a store's
    metrics as records, see `batchlab.store.export`), loaded on first use so that `import batchlab` stays light."""
    if name == "noise_scale":
        from .noise import noise_scale

        return noise_scale
    if name == "sharpness":
        from .curvature import sharpness

        return sharpness
    if name == "critical_batch":
        from .driver.critical import critical_batch

        return critical_batch
    if name == "load_metrics":
        from .store.export import load_metrics

        return load_metrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
