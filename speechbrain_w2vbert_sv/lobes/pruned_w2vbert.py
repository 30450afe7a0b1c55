"""A w2v-BERT 2.0 model whose layers have their own sizes, as pruning leaves them.

A model component like the other lobes (``pruning/`` builds it; a pruned folder's
``hyperparams.yaml`` names only its ``model_type``, which the backbone registers from
here), so loading a pruned model needs nothing of ``pruning/``.

``PrunedWav2Vec2BertModel`` is a ``transformers.Wav2Vec2BertModel``: it runs
HF's forward and keeps HF's layer classes (attention modules stay
``Wav2Vec2BertSelfAttention`` with fewer heads); only the widths of the
attention, both feed-forward blocks and the convolution module differ per
layer, as listed in ``PrunedWav2Vec2BertConfig``. A layer with no heads left
gets ``HeadlessSelfAttention`` and one with no convolution channels left
``EmptyConvolutionModule``, since HF's modules cannot run with zero width.
"""

import warnings

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    Wav2Vec2BertConfig,
    Wav2Vec2BertModel,
)
from transformers import initialization as init

# Pruned sizes of one layer, in this order everywhere in the package.
GROUPS = ("heads", "ffn1", "ffn2", "conv")
_SIZE_FIELDS = {
    "heads": "layer_attention_heads",
    "ffn1": "layer_ffn1_units",
    "ffn2": "layer_ffn2_units",
    "conv": "layer_conv_channels",
}
SUPPORTED_POSITION_EMBEDDINGS = ("relative_key", None)


def check_prunable_config(config):
    """Raises ``ValueError`` for configurations the pruning code does not
    handle (the w2v-BERT 2.0 one is handled).

    Arguments
    ---------
    config : transformers.Wav2Vec2BertConfig
        Configuration to check.
    """
    if config.position_embeddings_type not in SUPPORTED_POSITION_EMBEDDINGS:
        raise ValueError(
            "pruning supports position_embeddings_type in "
            f"{SUPPORTED_POSITION_EMBEDDINGS}, got "
            f"{config.position_embeddings_type!r} (its per-head parameters or "
            "head-wise input rotation are not sliced)"
        )
    if config.add_adapter:
        raise ValueError(
            "pruning supports models without the length adapter (config.add_adapter must be False)"
        )
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size {config.hidden_size} is not a multiple of "
            f"num_attention_heads {config.num_attention_heads}"
        )


class PrunedWav2Vec2BertConfig(Wav2Vec2BertConfig):
    """``Wav2Vec2BertConfig`` with per-layer sizes of the prunable parts.

    Arguments
    ---------
    layer_attention_heads : list of int, optional
        Heads kept in each layer (default: ``num_attention_heads``).
    layer_ffn1_units : list of int, optional
        Intermediate units of the first (macaron) feed-forward per layer
        (default: ``intermediate_size``).
    layer_ffn2_units : list of int, optional
        Same for the second feed-forward.
    layer_conv_channels : list of int, optional
        Channels of the convolution module per layer (default:
        ``hidden_size``).
    **kwargs
        Any ``Wav2Vec2BertConfig`` argument.

    Example
    -------
    >>> config = PrunedWav2Vec2BertConfig(
    ...     hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
    ...     intermediate_size=32, layer_attention_heads=[4, 0])
    >>> config.model_type, config.layer_attention_heads, config.layer_conv_channels
    ('pruned-wav2vec2-bert', [4, 0], [16, 16])
    >>> config.layer_sizes(1)
    {'heads': 0, 'ffn1': 32, 'ffn2': 32, 'conv': 16}
    """

    model_type = "pruned-wav2vec2-bert"

    layer_attention_heads: list[int] | None = None
    layer_ffn1_units: list[int] | None = None
    layer_ffn2_units: list[int] | None = None
    layer_conv_channels: list[int] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        full = {
            "heads": self.num_attention_heads,
            "ffn1": self.intermediate_size,
            "ffn2": self.intermediate_size,
            "conv": self.hidden_size,
        }
        for group, field in _SIZE_FIELDS.items():
            sizes = getattr(self, field)
            if sizes is None:
                sizes = [full[group]] * self.num_hidden_layers
            sizes = [int(s) for s in sizes]
            if len(sizes) != self.num_hidden_layers:
                raise ValueError(
                    f"{field} must list num_hidden_layers="
                    f"{self.num_hidden_layers} sizes, got {len(sizes)}"
                )
            if any(not 0 <= s <= full[group] for s in sizes):
                raise ValueError(f"{field} entries must lie in [0, {full[group]}], got {sizes}")
            setattr(self, field, sizes)

    def layer_sizes(self, index):
        """Sizes of layer ``index`` as a dict keyed by ``GROUPS``."""
        return {g: getattr(self, f)[index] for g, f in _SIZE_FIELDS.items()}


class OutputBias(nn.Module):
    """The bias left of a pruned-away ``linear_out``: only the parameter,
    under the checkpoint key ``linear_out.bias`` (a zero-width weight would
    be an unused parameter under DDP).

    Arguments
    ---------
    hidden_size : int
        Model dimension.
    """

    def __init__(self, hidden_size):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden_size))


class HeadlessSelfAttention(nn.Module):
    """Self-attention block of a layer whose heads were all pruned: its
    output is the output projection's bias at every frame.

    Arguments
    ---------
    hidden_size : int
        Model dimension.

    Example
    -------
    >>> attn = HeadlessSelfAttention(8)
    >>> out, weights = attn(torch.randn(2, 5, 8))
    >>> out.shape, weights
    (torch.Size([2, 5, 8]), None)
    """

    num_heads = 0

    def __init__(self, hidden_size):
        super().__init__()
        self.linear_out = OutputBias(hidden_size)

    def forward(self, hidden_states, *args, **kwargs):
        """Returns ``(bias broadcast to hidden_states' shape, None)``."""
        bias = self.linear_out.bias.to(hidden_states.dtype)
        return torch.zeros_like(hidden_states) + bias, None


class EmptyConvolutionModule(nn.Module):
    """Convolution module of a layer whose channels were all pruned: it adds
    nothing to the residual stream (the module has no output bias).

    Example
    -------
    >>> EmptyConvolutionModule()(torch.ones(1, 3, 4)).abs().sum()
    tensor(0.)
    """

    def forward(self, hidden_states, attention_mask=None):
        """Returns zeros shaped like ``hidden_states``."""
        return torch.zeros_like(hidden_states)


def _resize_layer(layer, config, sizes):
    """Replaces the prunable sub-modules of an HF encoder layer by new,
    uninitialised ones of the given sizes, on the device and dtype of the
    ones they replace."""
    hidden = config.hidden_size
    head_size = hidden // config.num_attention_heads
    ref = layer.ffn1_layer_norm.weight
    kw = {"device": ref.device, "dtype": ref.dtype}

    if sizes["heads"] == 0:
        # No LayerNorm before a block that ignores its input (it would be an
        # unused parameter under DDP).
        layer.self_attn_layer_norm = nn.Identity()
        layer.self_attn = HeadlessSelfAttention(hidden).to(**kw)
    else:
        attn = layer.self_attn
        width = sizes["heads"] * head_size
        attn.num_heads = sizes["heads"]
        attn.linear_q = nn.Linear(hidden, width, **kw)
        attn.linear_k = nn.Linear(hidden, width, **kw)
        attn.linear_v = nn.Linear(hidden, width, **kw)
        attn.linear_out = nn.Linear(width, hidden, **kw)

    for group in ("ffn1", "ffn2"):
        ffn = getattr(layer, group)
        ffn.intermediate_dense = nn.Linear(hidden, sizes[group], **kw)
        ffn.output_dense = nn.Linear(sizes[group], hidden, **kw)

    channels = sizes["conv"]
    if channels == 0:
        layer.conv_module = EmptyConvolutionModule()
    else:
        conv = layer.conv_module
        kernel = config.conv_depthwise_kernel_size
        conv.pointwise_conv1 = nn.Conv1d(hidden, 2 * channels, 1, bias=False, **kw)
        conv.depthwise_conv = nn.Conv1d(
            channels, channels, kernel, groups=channels, bias=False, **kw
        )
        conv.depthwise_layer_norm = nn.LayerNorm(channels, eps=config.layer_norm_eps, **kw)
        conv.pointwise_conv2 = nn.Conv1d(channels, hidden, 1, bias=False, **kw)


class PrunedWav2Vec2BertModel(Wav2Vec2BertModel):
    """``Wav2Vec2BertModel`` with per-layer pruned sizes.

    Built by ``GatedWav2Vec2Bert.materialize()``, saved with
    ``save_pretrained`` and reloaded with ``from_pretrained`` or
    ``transformers.AutoModel.from_pretrained`` (see :func:`register_auto_classes`; the
    ``speechbrain_w2vbert_sv.pruning`` package registers it when imported). Constructing
    it from a config gives HF's random initialisation.

    Arguments
    ---------
    config : PrunedWav2Vec2BertConfig
        Configuration with the per-layer sizes.

    Example
    -------
    >>> config = PrunedWav2Vec2BertConfig(
    ...     hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
    ...     intermediate_size=32, feature_projection_input_dim=8,
    ...     conv_depthwise_kernel_size=3, layer_attention_heads=[2, 0],
    ...     layer_ffn1_units=[8, 0], layer_conv_channels=[4, 0])
    >>> model = PrunedWav2Vec2BertModel(config).eval()
    >>> out = model(torch.randn(1, 6, 8), output_hidden_states=True)
    >>> len(out.hidden_states), out.last_hidden_state.shape
    (3, torch.Size([1, 6, 16]))
    """

    config_class = PrunedWav2Vec2BertConfig

    def __init__(self, config):
        if not isinstance(config, PrunedWav2Vec2BertConfig):
            raise ValueError(
                "PrunedWav2Vec2BertModel needs a PrunedWav2Vec2BertConfig, "
                f"got {type(config).__name__}"
            )
        check_prunable_config(config)
        # Build full-size HF layers on the meta device (free), shrink them,
        # then allocate and initialise only the pruned sizes; under
        # from_pretrained the target device is already meta.
        device = torch.empty(0).device
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Initializing zero-element")
            with torch.device("meta"):
                super().__init__(config)
                for index, layer in enumerate(self.encoder.layers):
                    _resize_layer(layer, config, config.layer_sizes(index))
            if device.type != "meta":
                self.to_empty(device=device)
                self.init_weights()

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, OutputBias):
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)


def register_auto_classes():
    """Registers the pruned config and model with transformers' ``AutoConfig`` and
    ``AutoModel``, so that a saved pruned encoder loads like any other (idempotent)."""
    AutoConfig.register(
        PrunedWav2Vec2BertConfig.model_type, PrunedWav2Vec2BertConfig, exist_ok=True
    )
    AutoModel.register(PrunedWav2Vec2BertConfig, PrunedWav2Vec2BertModel, exist_ok=True)
