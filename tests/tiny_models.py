"""Small configurations of the package's models, shared by the tests that need one."""

import torch

from speechbrain_w2vbert_sv.lobes.embedding_model import SpeakerEmbeddingModel
from speechbrain_w2vbert_sv.lobes.heads import MFAHead
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank

# A 2-layer, 32-wide w2v-BERT encoder with short relative-position windows.
SMALL_W2VBERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "left_max_position_embeddings": 8,
    "right_max_position_embeddings": 4,
}


def small_w2vbert_model(seed=0):
    """The w2v-BERT speaker model (front end, SMALL_W2VBERT encoder, 16-dim MFA head),
    with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return SpeakerEmbeddingModel(
        frontend=W2VBertFbank(),
        backbone=W2VBertBackbone(config=SMALL_W2VBERT),
        head=MFAHead(
            num_hidden_states=3,
            input_size=32,
            adapter_size=8,
            attention_channels=4,
            embedding_size=16,
        ),
    )
