from pathlib import Path
import re

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "keras_vit" / "_install.py").read_text()).group(1)

# Reading .safetensors and PyTorch checkpoints (the CPU build of torch).
WEIGHTS = ["torch==2.13.0", "safetensors>=0.4"]

setup(
    name="keras-vision-transformer",  # "keras-vit" on PyPI is another project
    version=VERSION,
    description="Vision Transformers as serializable Keras 3 layers: train, tune, export, load pretrained weights.",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_vit", "keras_vit.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.5,<4",
        "tensorflow-datasets>=4.9,<5",
        "keras-tuner>=1.4.7,<2",
        # KerasTuner imports TensorBoard during `search`; TF 2.21 no longer installs it.
        "tensorboard>=2.16,<3",
        "ai-edge-litert>=1.2",
        # export.py writes metadata into .tflite flatbuffers (also a TensorFlow dependency).
        "flatbuffers>=23.5",
        "numpy>=1.26",
        # ml_dtypes 0.7.0 takes 0.8-1.0 s to import here (its extension module; 0.6.0: 0.05-0.08 s), a
        # cost every process that imports TensorFlow, JAX or Keras pays: each `keras-vit` command and
        # each test subprocess. Its one addition, float8_e5m3fnu, is used by none of them.
        "ml_dtypes>=0.5.4,<0.7",
        "pillow>=10",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "pyyaml>=6",
        # pretrained presets: the hub client (its cache, HF_HUB_OFFLINE) and safetensors files
        "huggingface_hub>=0.23",
        "safetensors>=0.4",
    ],
    extras_require={
        # Tests compare against timm; timm imports torchvision, whose PyPI
        # x86-64 wheel 0.28.0 is the one that pairs with the CPU torch 2.13.0.
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6", "importlib_resources", "jax>=0.4.30", *WEIGHTS, "timm>=1.0,<2", "torchvision==0.28.0",
                "onnx>=1.16", "onnxruntime>=1.18", "tf2onnx>=1.17,<2"],
        "weights": WEIGHTS,
        "benchmarks": ["keras-hub==0.32.0"],
        # keras_vit.export.export_onnx (tf2onnx, the converter Keras' own ONNX export uses on TensorFlow)
        # and ONNX Runtime for load_predictor(".onnx"); the "dev" list repeats them.
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "tf2onnx>=1.17,<2"],
    },
    entry_points={"console_scripts": ["keras-vit=keras_vit.cli.main:main"]},
)
