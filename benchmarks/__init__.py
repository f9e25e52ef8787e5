"""Benchmark suite of keras_vit: `python -m benchmarks.run --help`.

Timing targets live here, never in the tests. The suite compares
`keras_vit.build_vit` with keras-hub's `ViTBackbone` (plus the same linear
head) in one process, alternating the contenders, and writes its tables to
``benchmarks/results/``.
"""

import os

# TensorFlow turns its oneDNN graph rewrites (MatMul + BiasAdd + GELU fused
# into one kernel, oneDNN matmuls) on by default only on CPUs with AVX-512;
# on others (this project's machine: AVX2) they are off, and the Ti-like
# model runs about a quarter slower. The benchmarks turn them on for every
# contender alike unless the variable is already set (it is read once, when
# TensorFlow loads); the results record the setting.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
