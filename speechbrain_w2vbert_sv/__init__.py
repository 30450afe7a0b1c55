"""Speaker verification with w2v-BERT 2.0 and ASR-pretrained Conformers for SpeechBrain.

Layers, in the order data flows: ``data`` (corpora, augmentation, pipelines) ->
``lobes`` (front ends, backbones, heads, embedding models, losses) -> ``training`` and
``pruning`` -> ``scoring`` -> ``inference`` (interfaces, export, ONNX); see
ARCHITECTURE.md.
"""

from speechbrain_w2vbert_sv import legacy_paths

__version__ = "0.1.0"

legacy_paths.install()
