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
    # Ranges that were tested; constraints.txt holds the exact known-good set (CI and the
    # README install with it). The floors of torch, torchaudio and speechbrain: a fresh
    # venv with torch 2.12.1 (PyPI's CUDA 13 build), torchaudio 2.11.0, speechbrain 1.1.0
    # (transformers 5.25.0, peft 0.21.2) passes test_frontend, test_audio, test_inference,
    # test_legacy_exports, test_speechbrain_pretrained, test_backbone_head, test_losses
    # and test_brain; speechbrain 1.0.3 cannot be imported with torchaudio 2.11 (it calls
    # torchaudio.list_audio_backends, which 2.11 removed). torchaudio follows torch's build:
    # 2.10 and older pin one torch release (torchaudio 2.10.0 requires torch==2.10.0), and
    # the 2.11 wheels load only beside a torch of the same kind (PyPI's CUDA build fails
    # to load beside torch 2.13.0+cpu: libc10_cuda.so), so install both from one index.
    # Upper bounds: the next major release of each, where internals are used: HF's
    # attention classes (lobes/attention.py), peft's LoRA layers, SpeechBrain's
    # interfaces and checkpoints, torch's oneDNN ops (scoring, with a fallback).
    # The transformers and peft floors were found by swapping one older release in at a
    # time and running the tests that use them (test_pruning, test_backbone_head,
    # test_attention, test_legacy_exports, test_inference, test_stage_sizes and the
    # doctests of pruning/, lobes/w2vbert_backbone.py, lobes/attention.py, inference/):
    # transformers 5.16.0 passes, 5.15.1 fails (its attention has no `scaling`), 5.0.0
    # more (config dataclasses, no SDPA for w2v-BERT); peft 0.18.0 passes, 0.17.1 cannot
    # be imported with transformers 5.24 (HybridCache is gone).
    install_requires=[
        "torch>=2.12.1,<3",
        "torchaudio>=2.11,<3",
        "speechbrain>=1.1,<2",
        "transformers>=5.16,<6",
        "peft>=0.18,<1",
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
