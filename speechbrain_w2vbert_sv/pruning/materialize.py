"""Slicing a gated w2v-BERT model into a smaller ``PrunedWav2Vec2BertModel``.

Units whose gate is exactly zero are removed; the (possibly fractional)
values of the kept gates are folded into the columns of the projection that
follows the gate (``linear_out``, ``output_dense``, ``pointwise_conv2``), so
the pruned model computes what the gated model computes with those values.
"""

import torch

from speechbrain_w2vbert_sv.lobes.pruned_w2vbert import (
    GROUPS,
    PrunedWav2Vec2BertConfig,
    PrunedWav2Vec2BertModel,
)

from .counting import encoder_layer_sizes

_SIZE_ARGS = {
    "heads": "layer_attention_heads",
    "ffn1": "layer_ffn1_units",
    "ffn2": "layer_ffn2_units",
    "conv": "layer_conv_channels",
}


def glu_rows(index, channels):
    """Rows of a ``channels -> 2 * channels`` GLU projection that feed the
    output channels ``index``: both halves, ``cat([index, index + channels])``.

    Arguments
    ---------
    index : torch.LongTensor
        Kept output channels.
    channels : int
        Output channels of the GLU before pruning.

    Returns
    -------
    torch.LongTensor

    Example
    -------
    >>> glu_rows(torch.tensor([0, 2]), 4)
    tensor([0, 2, 4, 6])
    """
    return torch.cat([index, index + channels])


def _head_rows(heads, head_size):
    """Feature rows of the kept heads."""
    offsets = torch.arange(head_size, device=heads.device)
    return (heads[:, None] * head_size + offsets).flatten()


def _slice_layer(state, prefix, layer_values, head_size, channels):
    """Slices the state-dict entries of one encoder layer in place."""
    # Attention heads.
    attn = prefix + "self_attn."
    values = layer_values["heads"]
    kept = torch.nonzero(values).flatten()
    if len(kept):
        rows = _head_rows(kept, head_size)
        for name in ("linear_q", "linear_k", "linear_v"):
            state[f"{attn}{name}.weight"] = state[f"{attn}{name}.weight"][rows]
            state[f"{attn}{name}.bias"] = state[f"{attn}{name}.bias"][rows]
        scale = values[kept].repeat_interleave(head_size)
        weight = state[f"{attn}linear_out.weight"]
        state[f"{attn}linear_out.weight"] = weight[:, rows] * scale.to(weight.dtype)
    else:
        # HeadlessSelfAttention keeps only linear_out's bias.
        for key in [k for k in state if k.startswith(attn)]:
            if key != attn + "linear_out.bias":
                del state[key]
        for key in [k for k in state if k.startswith(prefix + "self_attn_layer_norm.")]:
            del state[key]

    # Feed-forward units.
    for group in ("ffn1", "ffn2"):
        ffn = f"{prefix}{group}."
        values = layer_values[group]
        kept = torch.nonzero(values).flatten()
        state[f"{ffn}intermediate_dense.weight"] = state[f"{ffn}intermediate_dense.weight"][kept]
        state[f"{ffn}intermediate_dense.bias"] = state[f"{ffn}intermediate_dense.bias"][kept]
        weight = state[f"{ffn}output_dense.weight"]
        state[f"{ffn}output_dense.weight"] = weight[:, kept] * values[kept].to(weight.dtype)

    # Convolution channels: one gate for both GLU rows, the depthwise filter,
    # the depthwise LayerNorm entry and the pointwise_conv2 column.
    conv = prefix + "conv_module."
    values = layer_values["conv"]
    kept = torch.nonzero(values).flatten()
    if len(kept):
        state[f"{conv}pointwise_conv1.weight"] = state[f"{conv}pointwise_conv1.weight"][
            glu_rows(kept, channels)
        ]
        state[f"{conv}depthwise_conv.weight"] = state[f"{conv}depthwise_conv.weight"][kept]
        for name in ("weight", "bias"):
            key = f"{conv}depthwise_layer_norm.{name}"
            state[key] = state[key][kept]
        weight = state[f"{conv}pointwise_conv2.weight"]
        scale = values[kept].to(weight.dtype)[None, :, None]
        state[f"{conv}pointwise_conv2.weight"] = weight[:, kept] * scale
    else:
        for key in [k for k in state if k.startswith(conv)]:
            del state[key]


@torch.no_grad()
def materialize(model, layer_values):
    """Builds the pruned model for given gate values.

    Arguments
    ---------
    model : transformers.Wav2Vec2BertModel
        Model the gates apply to (an original or pruned one).
    layer_values : list of dict
        Per layer, a 1-D tensor of gate values for each of ``"heads"``,
        ``"ffn1"``, ``"ffn2"``, ``"conv"`` (zero: removed; non-zero: kept
        and scaled by the value), e.g. ``GatedWav2Vec2Bert.deterministic_values()``.

    Returns
    -------
    PrunedWav2Vec2BertModel
        New model on the same device and with the same dtype, in the same
        train/eval mode; the input model is unchanged.

    Example
    -------
    >>> from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel
    >>> model = Wav2Vec2BertModel(Wav2Vec2BertConfig(
    ...     hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
    ...     intermediate_size=32, feature_projection_input_dim=8))
    >>> values = [{"heads": torch.tensor([1.0, 0.0, 0.5, 0.0]),
    ...            "ffn1": torch.ones(32), "ffn2": torch.zeros(32),
    ...            "conv": torch.ones(16)}]
    >>> pruned = materialize(model, values)
    >>> pruned.config.layer_attention_heads, pruned.config.layer_ffn2_units
    ([2], [0])
    """
    sizes = encoder_layer_sizes(model)
    if len(layer_values) != len(sizes):
        raise ValueError(f"layer_values has {len(layer_values)} entries for {len(sizes)} layers")
    for index, (size, values) in enumerate(zip(sizes, layer_values)):
        for group in GROUPS:
            if tuple(values[group].shape) != (size[group],):
                raise ValueError(
                    f"layer_values[{index}][{group!r}] has shape "
                    f"{tuple(values[group].shape)}, expected ({size[group]},)"
                )

    config = model.config
    head_size = config.hidden_size // config.num_attention_heads
    kept_sizes = {
        _SIZE_ARGS[g]: [int(torch.count_nonzero(v[g])) for v in layer_values] for g in GROUPS
    }
    settings = {k: v for k, v in config.to_dict().items() if k not in _SIZE_ARGS.values()}
    settings.pop("model_type", None)
    pruned_config = PrunedWav2Vec2BertConfig(
        **settings, **kept_sizes, attn_implementation=config._attn_implementation
    )

    state = dict(model.state_dict())
    for index, (size, values) in enumerate(zip(sizes, layer_values)):
        values = {g: values[g].detach() for g in GROUPS}
        _slice_layer(state, f"encoder.layers.{index}.", values, head_size, size["conv"])

    reference = next(model.parameters())
    with torch.device("meta"):
        pruned = PrunedWav2Vec2BertModel(pruned_config)
    pruned = pruned.to(dtype=reference.dtype).to_empty(device=reference.device)
    pruned.load_state_dict(state, strict=True)
    return pruned.train(model.training)
