"""Installation of speechbrain-w2vbert-sv."""

from setuptools import find_packages, setup

setup(
    name="speechbrain-w2vbert-sv",
    version="0.1.0",
    description=(
        "Speaker verification with w2v-BERT 2.0 and ASR-pretrained Conformers "
        "for SpeechBrain"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["speechbrain_w2vbert_sv", "speechbrain_w2vbert_sv.*"])
    + ["speechbrain_w2vbert_sv.hparams"],
    # The repository's hparams/ (model definitions, inference template) ships inside the
    # package, so exports work from a non-editable install too.
    package_dir={"speechbrain_w2vbert_sv.hparams": "hparams"},
    package_data={"speechbrain_w2vbert_sv.hparams": ["*.yaml"]},
    python_requires=">=3.9",
    # torchaudio 2.11 is built against torch 2.14.1; speechbrain imports it at import time.
    install_requires=[
        "torch==2.14.1",
        "torchaudio==2.11.0",
        "speechbrain==1.1.2",
        "transformers>=4.48",
        "peft>=0.13",
        "hyperpyyaml>=1.2",
        "numpy",
        "soundfile",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest>=7"],
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
        # The linter and formatter CI runs (ruff.toml); pre-commit runs them on commit.
        "lint": ["ruff==0.17.6", "pre-commit"],
    },
    entry_points={"console_scripts": ["w2vbert-sv = speechbrain_w2vbert_sv.cli:main"]},
)
