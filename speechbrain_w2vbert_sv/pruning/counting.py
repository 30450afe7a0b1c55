"""Parameter and MAC counts of (pruned) w2v-BERT encoders.

"Encoder" means the whole ``Wav2Vec2BertModel`` except ``masked_spec_embed``
(a training-only mask vector): feature projection plus Conformer layers.
"""

import torch

from speechbrain_w2vbert_sv.lobes.pruned_w2vbert import GROUPS, EmptyConvolutionModule

# Encoder frames per second of audio: 10 ms fbank frames, stacked by 2.
FRAMES_PER_SECOND = 50


def encoder_layer_sizes(model):
    """Sizes of the prunable parts of each layer, read from the modules.

    Arguments
    ---------
    model : transformers.Wav2Vec2BertModel
        Original or pruned model.

    Returns
    -------
    list of dict
        One ``{"heads", "ffn1", "ffn2", "conv"}`` dict of ints per layer.

    Example
    -------
    >>> from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel
    >>> model = Wav2Vec2BertModel(Wav2Vec2BertConfig(
    ...     hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
    ...     intermediate_size=32, feature_projection_input_dim=8))
    >>> encoder_layer_sizes(model)
    [{'heads': 4, 'ffn1': 32, 'ffn2': 32, 'conv': 16}]
    """
    sizes = []
    for layer in model.encoder.layers:
        conv = layer.conv_module
        sizes.append(
            {
                "heads": layer.self_attn.num_heads,
                "ffn1": layer.ffn1.intermediate_dense.out_features,
                "ffn2": layer.ffn2.intermediate_dense.out_features,
                "conv": 0
                if isinstance(conv, EmptyConvolutionModule)
                else conv.depthwise_conv.out_channels,
            }
        )
    return sizes


def count_encoder_params(config, layer_keep):
    """Encoder parameter count as a function of which units are kept.

    Each prunable unit (head, FFN unit, conv channel) comes with the
    probability that it is kept; the result is the exact expected parameter
    count of the materialised encoder when units are kept independently with
    those probabilities (0/1 values give the exact count of one model).
    Parameters that exist only while a block keeps at least one unit (the
    attention LayerNorm and relative-position table, the convolution
    module's input LayerNorm) are weighted by ``1 - prod(1 - p)``.

    Arguments
    ---------
    config : transformers.Wav2Vec2BertConfig
        Configuration of the full model (dimensions).
    layer_keep : list of dict
        One dict per layer mapping each of ``"heads"``, ``"ffn1"``, ``"ffn2"``,
        ``"conv"`` to a 1-D tensor of keep probabilities.

    Returns
    -------
    torch.Tensor
        Float64 scalar (exact for integer counts), differentiable in the
        probabilities.

    Example
    -------
    >>> from transformers import Wav2Vec2BertConfig
    >>> config = Wav2Vec2BertConfig()
    >>> keep = {"heads": torch.ones(16), "ffn1": torch.ones(4096),
    ...         "ffn2": torch.ones(4096), "conv": torch.ones(1024)}
    >>> int(count_encoder_params(config, [keep] * 24))
    580492096
    """
    if len(layer_keep) != config.num_hidden_layers:
        raise ValueError(
            f"layer_keep has {len(layer_keep)} entries for {config.num_hidden_layers} layers"
        )
    hidden = config.hidden_size
    head_size = hidden // config.num_attention_heads
    kernel = config.conv_depthwise_kernel_size
    feat = config.feature_projection_input_dim
    positions = 0
    if config.position_embeddings_type == "relative_key":
        positions = config.left_max_position_embeddings + config.right_max_position_embeddings + 1
    layer_norm = 2 * hidden

    total = 2 * feat + feat * hidden + hidden  # feature projection
    for keep in layer_keep:
        keep = {g: torch.as_tensor(keep[g]).double() for g in GROUPS}
        total = total + 3 * layer_norm  # ffn1, ffn2, final LayerNorms
        heads, convs = keep["heads"], keep["conv"]
        any_head = 1 - torch.prod(1 - heads)
        total = (
            total
            + any_head * (layer_norm + positions * head_size)
            + heads.sum() * head_size * (3 * (hidden + 1) + hidden)
            + hidden  # linear_out bias
        )
        for group in ("ffn1", "ffn2"):
            total = total + keep[group].sum() * (2 * hidden + 1) + hidden
        total = (
            total
            + (1 - torch.prod(1 - convs)) * layer_norm
            + convs.sum() * (3 * hidden + kernel + 2)
        )
    return torch.as_tensor(total, dtype=torch.float64)


def full_layer_keep(sizes):
    """All-ones keep probabilities for layers of the given sizes.

    Arguments
    ---------
    sizes : list of dict
        As returned by ``encoder_layer_sizes``.

    Returns
    -------
    list of dict
        Input of ``count_encoder_params``.
    """
    return [{g: torch.ones(layer[g]) for g in GROUPS} for layer in sizes]


def count_encoder_macs(model, seconds=1.0):
    """Multiply-accumulates of the encoder for one utterance.

    Counts linear layers, convolutions and the attention matmuls (scores,
    relative-position scores, weighted values: the ``T**2`` terms); not
    normalisations, activations or softmax.

    Arguments
    ---------
    model : transformers.Wav2Vec2BertModel
        Original or pruned model.
    seconds : float
        Utterance duration (``FRAMES_PER_SECOND`` encoder frames per second).

    Returns
    -------
    int
        MACs.

    Example
    -------
    >>> from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel
    >>> with torch.device("meta"):
    ...     model = Wav2Vec2BertModel(Wav2Vec2BertConfig())
    >>> round(count_encoder_macs(model) / 1e9, 2)
    29.17
    """
    config = model.config
    frames = round(seconds * FRAMES_PER_SECOND)
    hidden = config.hidden_size
    head_size = hidden // config.num_attention_heads
    kernel = config.conv_depthwise_kernel_size
    score_matmuls = 3 if config.position_embeddings_type == "relative_key" else 2

    macs = frames * config.feature_projection_input_dim * hidden
    for size in encoder_layer_sizes(model):
        width = size["heads"] * head_size
        macs += 4 * frames * hidden * width
        macs += score_matmuls * frames * frames * width
        macs += 2 * frames * hidden * (size["ffn1"] + size["ffn2"])
        macs += frames * size["conv"] * (3 * hidden + kernel)
    return macs
