"""Inference: the pretrained interfaces, export of training runs, ONNX, extraction and
verification of trial lists.

The names that exported ``hyperparams.yaml`` files and the README use are re-exported
here (``speechbrain_w2vbert_sv.inference.W2VBertSpeakerRecognition``,
``speechbrain_w2vbert_sv.inference.PassThrough``, ``load_model``, ``export_model``).
"""

from speechbrain_w2vbert_sv.inference.export import export_model
from speechbrain_w2vbert_sv.inference.interface import (
    ASRSpeakerRecognition,
    PassThrough,
    SpeechBrainSpeakerRecognition,
    W2VBertSpeakerRecognition,
    interface_class,
    load_model,
)
from speechbrain_w2vbert_sv.inference.model_yaml import model_settings
from speechbrain_w2vbert_sv.inference.training_runs import find_checkpoint, load_run

__all__ = [
    "ASRSpeakerRecognition",
    "PassThrough",
    "SpeechBrainSpeakerRecognition",
    "W2VBertSpeakerRecognition",
    "export_model",
    "find_checkpoint",
    "interface_class",
    "load_model",
    "load_run",
    "model_settings",
]
