"""Compressors: real int8 kernels, simulated quantization at any bits, QAT, k-means sharing, pruning, and
the calibration sets they use. Each variant kind registers its handlers in :mod:`fairquant.compress.registry`."""
