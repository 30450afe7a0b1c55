"""Speaker verification with w2v-BERT 2.0 and ASR-pretrained Conformers for SpeechBrain.

Layers, in the order data flows: ``data`` (corpora, augmentation, pipelines) ->
``lobes`` (front ends, backbones, heads, embedding models, losses) -> ``training`` and
``pruning`` -> ``scoring`` -> ``inference`` (interfaces, export, ONNX); see
ARCHITECTURE.md.
"""

__version__ = "0.1.0"


def __getattr__(name):
    """An old module path's name (``heads``, ``backbones``, ...), looked up by
    HyperPyYAML in a folder an earlier version exported (see ``legacy_paths``)."""
    from speechbrain_w2vbert_sv.legacy_paths import legacy_module

    return legacy_module(name)
