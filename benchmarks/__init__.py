"""Benchmark suite of keras_vit: `python -m benchmarks.run --help`.

Timing targets live here, never in the tests. The suite compares
`keras_vit.build_vit` with keras-hub's `ViTBackbone` (plus the same linear
head) in one process, alternating the contenders, and writes its tables to
``benchmarks/results/``.
"""
