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


# Parameters whose HF initial values make attention nearly uniform and hide position errors.
ATTENTION_SCORE_PARAMETERS = ("linear_q", "linear_k", "distance_embedding")


def randomise_attention_scores(state, seed=0, std=0.5):
    """Draws the q/k projections and the relative-position distance tables of a
    w2v-BERT encoder anew, in place, from N(0, ``std``²).

    HF initialises them with small values: attention is then nearly uniform and
    parity checks cannot see errors in the scores (swapped q/k, a zeroed distance
    table). As ``tests/unittests/test_attention.py`` does for the distance tables.

    Arguments
    ---------
    state : torch.nn.Module or dict
        A module, or a state dict (e.g. a loaded ``embedding_model.ckpt``).
    seed : int
    std : float

    Returns
    -------
    list of str
        The names of the tensors drawn anew (sorted).
    """
    tensors = state.state_dict() if isinstance(state, torch.nn.Module) else state
    gen = torch.Generator().manual_seed(seed)
    names = sorted(
        k
        for k, v in tensors.items()
        if any(p in k for p in ATTENTION_SCORE_PARAMETERS) and v.is_floating_point()
    )
    with torch.no_grad():
        for name in names:
            tensor = tensors[name]
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * std)
    return names
