"""Hard-concrete gates attached to a ``transformers.Wav2Vec2BertModel``.

The model keeps its HF modules and forward; hooks multiply:
- each attention head's output (input of ``linear_out``) by its head gate,
- each FFN intermediate unit (input of ``output_dense``) by its unit gate, with
  separate gates for ``ffn1`` and ``ffn2``,
- each convolution-module channel (input of ``pointwise_conv2``) by its
  channel gate; one gate removes the channel's two GLU rows of
  ``pointwise_conv1``, its depthwise filter, its ``depthwise_layer_norm``
  entries and its ``pointwise_conv2`` column.

All gates are drawn once per model forward (a pre-hook on the model):
random samples when the model is in training mode, the deterministic
estimate in eval mode, in which case the gated model computes exactly what
``materialize()`` builds.
"""

from functools import partial

import torch
from torch import nn
from transformers import Wav2Vec2BertModel

from speechbrain_w2vbert_sv.lobes.pruned_w2vbert import GROUPS, check_prunable_config

from .counting import count_encoder_params, encoder_layer_sizes, full_layer_keep
from .gates import HardConcreteGates
from .materialize import materialize


class GatedWav2Vec2Bert(nn.Module):
    """Structured-pruning gates on heads, FFN units and conv channels.

    Arguments
    ---------
    model : transformers.Wav2Vec2BertModel
        Model to gate (an original or already pruned one); it is modified in
        place by hooks (see ``remove_hooks``) and kept as ``self.model``.
    head_drop_rate : float
        Initial drop rate of the attention-head gates.
    ffn_drop_rate : float
        Initial drop rate of the FFN intermediate-unit gates.
    conv_drop_rate : float
        Initial drop rate of the convolution-channel gates.
    temperature : float
        Hard-concrete temperature.
    stretch : tuple of two floats
        Hard-concrete stretch interval.

    Example
    -------
    >>> from transformers import Wav2Vec2BertConfig
    >>> model = Wav2Vec2BertModel(Wav2Vec2BertConfig(
    ...     hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
    ...     intermediate_size=32, feature_projection_input_dim=8,
    ...     conv_depthwise_kernel_size=3, layerdrop=0.0, mask_time_prob=0.0))
    >>> gated = GatedWav2Vec2Bert(model).train()
    >>> out = gated(torch.randn(2, 7, 8), output_hidden_states=True)
    >>> len(out.hidden_states)
    3
    >>> gated.original_num_params == sum(
    ...     p.numel() for n, p in model.named_parameters() if n != "masked_spec_embed")
    True
    >>> 0.0 < gated.expected_sparsity().item() < 0.5
    True
    >>> pruned = gated.eval().materialize()
    >>> sum(p.numel() for n, p in pruned.named_parameters()
    ...     if n != "masked_spec_embed") == gated.deterministic_num_params()
    True
    """

    def __init__(
        self,
        model,
        head_drop_rate=0.01,
        ffn_drop_rate=0.5,
        conv_drop_rate=0.01,
        temperature=2.0 / 3.0,
        stretch=(-0.1, 1.1),
    ):
        super().__init__()
        if not isinstance(model, Wav2Vec2BertModel):
            raise ValueError(
                "GatedWav2Vec2Bert needs a transformers.Wav2Vec2BertModel, "
                f"got {type(model).__name__}"
            )
        check_prunable_config(model.config)
        if getattr(model, "_pruning_gated", False):
            raise ValueError("this model already carries pruning gates")
        self.model = model
        sizes = encoder_layer_sizes(model)
        rates = {
            "heads": head_drop_rate,
            "ffn1": ffn_drop_rate,
            "ffn2": ffn_drop_rate,
            "conv": conv_drop_rate,
        }
        self.gates = nn.ModuleDict(
            {
                group: nn.ModuleList(
                    HardConcreteGates(
                        size[group],
                        init_drop_rate=rates[group],
                        temperature=temperature,
                        stretch=stretch,
                    )
                    for size in sizes
                )
                for group in GROUPS
            }
        )
        self.gates.to(next(model.parameters()).device)
        self.original_num_params = int(count_encoder_params(model.config, full_layer_keep(sizes)))
        self._values = None
        self._handles = []
        self._install_hooks()

    def forward(self, *args, **kwargs):
        """Runs the gated model (same arguments and outputs as HF's)."""
        return self.model(*args, **kwargs)

    # Gate values ----------------------------------------------------------

    def gate_parameters(self):
        """The gates' ``log_alpha`` parameters (for their own optimizer)."""
        return list(self.gates.parameters())

    def deterministic_values(self):
        """Deterministic gate values, one dict of tensors per layer."""
        return self._layer_values(lambda g: g.deterministic())

    def _layer_values(self, fn):
        num_layers = len(self.gates["heads"])
        return [{group: fn(self.gates[group][i]) for group in GROUPS} for i in range(num_layers)]

    def _draw(self, module, args):
        """Model pre-hook: draws every gate once for this forward; values
        stay cached for hooks that run again in a recomputation (gradient
        checkpointing)."""
        if self.model.training:
            self._values = self._layer_values(lambda g: g.sample())
        else:
            self._values = self.deterministic_values()

    # Sizes ----------------------------------------------------------------

    def expected_num_params(self):
        """Expected encoder parameter count under the gates' keep
        probabilities (differentiable, float64 scalar)."""
        keep = self._layer_values(lambda g: g.prob_nonzero())
        return count_encoder_params(self.model.config, keep)

    def expected_sparsity(self):
        """``1 - expected_num_params / original_num_params`` (float32
        scalar, differentiable)."""
        return (1.0 - self.expected_num_params() / self.original_num_params).float()

    @torch.no_grad()
    def deterministic_num_params(self):
        """Exact encoder parameter count of ``materialize()``'s result."""
        keep = self._layer_values(lambda g: (g.deterministic() > 0).double())
        return int(count_encoder_params(self.model.config, keep).round())

    def materialize(self):
        """The pruned model for the current deterministic gates.

        Returns
        -------
        PrunedWav2Vec2BertModel
            A new model (the gated one is left unchanged).
        """
        return materialize(self.model, self.deterministic_values())

    # Hooks ----------------------------------------------------------------

    def remove_hooks(self):
        """Detaches all gates from the model, which computes as before."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.model._pruning_gated = False

    def _install_hooks(self):
        model = self.model
        hooks = [(model.register_forward_pre_hook, self._draw)]
        for index, layer in enumerate(model.encoder.layers):
            if len(self.gates["heads"][index]):
                hooks.append(
                    (
                        layer.self_attn.linear_out.register_forward_pre_hook,
                        partial(self._gate_heads, index, layer.self_attn.head_size),
                    )
                )
            for group in ("ffn1", "ffn2"):
                if len(self.gates[group][index]):
                    hooks.append(
                        (
                            getattr(layer, group).output_dense.register_forward_pre_hook,
                            partial(self._gate_units, index, group),
                        )
                    )
            if len(self.gates["conv"][index]):
                conv = layer.conv_module
                hooks.append(
                    (
                        conv.pointwise_conv2.register_forward_pre_hook,
                        partial(self._gate_channels, index),
                    )
                )
                hooks.append(
                    (
                        conv.depthwise_layer_norm.register_forward_hook,
                        partial(self._masked_layer_norm, index),
                    )
                )
        self._handles = [register(fn) for register, fn in hooks]
        model._pruning_gated = True

    def _value(self, index, group, like):
        if self._values is None:
            raise RuntimeError(
                "gate values are drawn by the model's forward; run the model "
                "itself, not one of its layers"
            )
        return self._values[index][group].to(like.dtype)

    def _gate_heads(self, index, head_size, module, args):
        # linear_out input: [..., heads * head_size]
        x = args[0]
        gate = self._value(index, "heads", x).repeat_interleave(head_size)
        return (x * gate,) + args[1:]

    def _gate_units(self, index, group, module, args):
        # output_dense input: [..., units]
        x = args[0]
        return (x * self._value(index, group, x),) + args[1:]

    def _gate_channels(self, index, module, args):
        # pointwise_conv2 input: [batch, channels, time]
        x = args[0]
        return (x * self._value(index, "conv", x)[:, None],) + args[1:]

    def _masked_layer_norm(self, index, module, args, output):
        # The channel gate sits after depthwise_layer_norm, which normalises
        # over channels: its statistics are taken over the channels whose
        # gate is non-zero, exactly what the materialised LayerNorm (holding
        # only those channels) computes, so gated == materialised; fractional
        # gate values then fold into pointwise_conv2's columns.
        x = args[0].float()
        keep = (self._value(index, "conv", x) != 0).float()
        count = keep.sum().clamp(min=1.0)
        mean = (x * keep).sum(-1, keepdim=True) / count
        centered = (x - mean) * keep
        var = centered.pow(2).sum(-1, keepdim=True) / count
        normed = centered * torch.rsqrt(var + module.eps)
        return (normed * module.weight.float() + module.bias.float()).to(output.dtype)
