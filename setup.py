"""Installation of speechbrain-w2vbert-sv."""

from setuptools import find_packages, setup

setup(
    name="speechbrain-w2vbert-sv",
    version="0.1.0",
    description=(
        "Speaker verification with w2v-BERT 2.0 and ASR-pretrained Conformers for SpeechBrain"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["speechbrain_w2vbert_sv", "speechbrain_w2vbert_sv.*"])
    + ["speechbrain_w2vbert_sv.hparams"],
    # The repository's hparams/ (model definitions, inference template) ships inside the
    # package, so exports work from a non-editable install too.
    package_dir={"speechbrain_w2vbert_sv.hparams": "hparams"},
    package_data={"speechbrain_w2vbert_sv.hparams": ["*.yaml", "speechbrain_recipes/*.yaml"]},
    python_requires=">=3.9",
    # torchaudio 2.11 is built against torch 2.14.1; speechbrain imports it at import time.
    # The transformers and peft floors were found by swapping one older release in at a
    # time and running the tests that use them (test_pruning, test_backbone_head,
    # test_attention, test_legacy_exports, test_inference, test_stage_sizes and the
    # doctests of pruning/, lobes/w2vbert_backbone.py, lobes/attention.py, inference/):
    # transformers 5.16.0 passes, 5.15.1 fails (its attention has no `scaling`), 5.0.0
    # more (config dataclasses, no SDPA for w2v-BERT); peft 0.18.0 passes, 0.17.1 cannot
    # be imported with transformers 5.24 (HybridCache is gone).
    install_requires=[
        "torch==2.14.1",
        "torchaudio==2.11.0",
        "speechbrain==1.1.2",
        "transformers>=5.16",
        "peft>=0.18",
        "hyperpyyaml>=1.2",
        "numpy",
        "soundfile",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest>=7"],
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
        # Diarization: Silero VAD (its wheel ships the model), clustering (scikit-learn, as
        # SpeechBrain's diarization module), DER/JER as the literature reports them.
        "diarization": ["silero-vad", "scikit-learn", "pyannote.metrics"],
        # WebDataset tar shards for training data, as SpeechBrain's large-scale recipes read.
        "shards": ["webdataset"],
        # The linter and formatter CI runs (ruff.toml); pre-commit runs them on commit.
        "lint": ["ruff==0.17.6", "pre-commit"],
    },
    entry_points={"console_scripts": ["w2vbert-sv = speechbrain_w2vbert_sv.cli:main"]},
)
