"""batchlab: how batch size, learning rate and optimizer shape training."""

__version__ = "0.1.0"
