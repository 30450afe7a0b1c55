"""The w2v-BERT 2.0 backbone: HF `Wav2Vec2BertModel` returning every hidden state.

Loads from a hub id or a local folder, or is built from a config (tests, random
initialisation). Optional freezing, gradient checkpointing and LoRA through peft, with a
merge step that gives back a plain `Wav2Vec2BertModel`. The attention runs the
memory-efficient exact form of `speechbrain_w2vbert_sv.lobes.attention` in eval mode (so
SpeechBrain's stock interfaces and recipes get it too), HF's own in train mode.
"""

import copy

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from speechbrain.utils.logger import get_logger
from transformers import AutoConfig, AutoModel, Wav2Vec2BertConfig
from transformers.models.wav2vec2_bert.modeling_wav2vec2_bert import (
    Wav2Vec2BertSelfAttention,
)

from speechbrain_w2vbert_sv.lobes.attention import (
    MemoryEfficientWav2Vec2BertSelfAttention,
    enable_memory_efficient_attention,
    memory_efficient_attention_on,
)

# Registers the pruned model with AutoConfig/AutoModel, so pruned folders and configs load.
from speechbrain_w2vbert_sv.lobes.pruned_w2vbert import register_auto_classes
from speechbrain_w2vbert_sv.utils import lengths_to_mask

logger = get_logger(__name__)

# Settings every speaker model needs: a fixed number of hidden states (no layerdrop) and
# no SpecAugment masking vector (an unused parameter breaks DDP).
_SV_OVERRIDES = {"layerdrop": 0.0, "mask_time_prob": 0.0, "mask_feature_prob": 0.0}


def build_w2vbert_config(config):
    """Wav2Vec2BertConfig from a dict of keyword arguments (HyperPyYAML) or a config.

    Arguments
    ---------
    config : dict or transformers.PretrainedConfig
        Keyword arguments of `Wav2Vec2BertConfig` (or, with a ``model_type`` key, of the
        config class registered for it, e.g. a pruned model's), or a config object.

    Returns
    -------
    transformers.PretrainedConfig
        A copy with layerdrop and SpecAugment masking turned off.

    Example
    -------
    >>> build_w2vbert_config({"hidden_size": 32}).layerdrop
    0.0
    """
    if isinstance(config, dict):
        config = dict(config)
        model_type = config.pop("model_type", Wav2Vec2BertConfig.model_type)
        register_auto_classes()  # a pruned model's config names its registered type
        config = AutoConfig.for_model(model_type, **config)
    else:
        config = copy.deepcopy(config)
    for key, value in _SV_OVERRIDES.items():
        setattr(config, key, value)
    return config


def load_w2vbert(source, cache_dir=None):
    """Load a (possibly pruned) w2v-BERT model from a hub id or a local folder.

    Arguments
    ---------
    source : str
        Hub id (e.g. ``facebook/w2v-bert-2.0``) or a folder written by `save_pretrained`.
    cache_dir : str, optional
        Where downloaded files are cached.

    Returns
    -------
    transformers.Wav2Vec2BertModel
        The model, with layerdrop and SpecAugment masking turned off.
    """
    register_auto_classes()  # a saved pruned encoder loads through AutoModel too
    try:
        config = build_w2vbert_config(AutoConfig.from_pretrained(source, cache_dir=cache_dir))
        return AutoModel.from_pretrained(source, config=config, cache_dir=cache_dir)
    except OSError as error:
        raise EncoderSourceError(source, error) from None


class EncoderSourceError(ValueError):
    """A ``w2vbert_source`` that is neither a local folder nor reachable: says what to
    download and that a local folder is accepted.

    Arguments
    ---------
    source : str
        The hub id or folder asked for.
    error : Exception
        What transformers raised.

    Example
    -------
    >>> print(EncoderSourceError("facebook/w2v-bert-2.0", OSError("offline")))
    ... # doctest: +ELLIPSIS
    w2vbert_source='facebook/w2v-bert-2.0': the encoder is neither a local folder nor ...
    """

    def __init__(self, source, error):
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        name = str(source).rstrip("/").rpartition("/")[2] or "w2v-bert-2.0"
        super().__init__(
            f"w2vbert_source={source!r}: the encoder is neither a local folder nor in the "
            f"Hugging Face cache, and could not be fetched ({reason}). On a machine that "
            f"reaches the hub run `hf download {source} --local-dir {name}` (config.json and "
            f"model.safetensors suffice), copy the folder here and pass it: "
            f"--w2vbert_source={name} (w2vbert_source takes a local folder)"
        )


def encoder_hidden_states(model, feats, lengths):
    """All hidden states of an HF ``Wav2Vec2BertModel`` (or a gated/pruned one).

    Arguments
    ---------
    model : torch.nn.Module
        ``Wav2Vec2BertModel``, ``PrunedWav2Vec2BertModel`` or ``GatedWav2Vec2Bert``.
    feats : torch.Tensor
        Features ``[B, T, F]``.
    lengths : torch.Tensor
        Relative lengths ``[B]``.

    Returns
    -------
    torch.Tensor
        ``[L + 1, B, T, D]``: the feature projection output then each layer's output.

    Example
    -------
    >>> from transformers import Wav2Vec2BertModel
    >>> model = Wav2Vec2BertModel(build_w2vbert_config({"hidden_size": 16,
    ...     "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 32,
    ...     "feature_projection_input_dim": 8, "conv_depthwise_kernel_size": 3})).eval()
    >>> encoder_hidden_states(model, torch.randn(2, 5, 8), torch.tensor([1.0, 0.6])).shape
    torch.Size([3, 2, 5, 16])
    """
    mask = lengths_to_mask(lengths, feats.shape[1]).long()
    out = model(feats, attention_mask=mask, output_hidden_states=True)
    return torch.stack(out.hidden_states)


class W2VBertBackbone(torch.nn.Module):
    """w2v-BERT 2.0 encoder returning all hidden states (feature projection + layers).

    Arguments
    ---------
    source : str, optional
        Hub id or local folder to load the weights from.
    config : dict or transformers.PretrainedConfig, optional
        Builds a randomly initialised model instead of loading one (used by tests and
        when the weights come from a checkpoint). Exactly one of `source`/`config`; an
        empty dict counts as not given (HyperPyYAML overrides need a dict placeholder).
    freeze : bool
        Freeze the encoder weights (LoRA adapters, if any, stay trainable).
    lora_rank : int
        LoRA rank; 0 disables LoRA.
    lora_alpha : float
        LoRA scaling numerator (the update is scaled by alpha / rank).
    lora_dropout : float
        Dropout on the LoRA input.
    lora_target_modules : list of str
        Names of the linear layers that receive LoRA adapters.
    gradient_checkpointing : bool
        Recompute layer activations in the backward pass to save memory.
    cache_dir : str, optional
        Cache folder for hub downloads.
    memory_efficient_attention : bool or str
        Attention path (see :mod:`speechbrain_w2vbert_sv.lobes.attention`): True, the
        memory-efficient exact form; False, HF's; ``"inference"`` (default), the
        memory-efficient form in eval mode and HF's in train mode, unless the encoder is
        frozen without LoRA (no gradients then). Applied on ``train()``/``eval()``;
        settable later through the attribute of the same name.

    Example
    -------
    >>> backbone = W2VBertBackbone(
    ...     config={"hidden_size": 32, "num_hidden_layers": 2,
    ...             "num_attention_heads": 4, "intermediate_size": 64},
    ...     lora_rank=4, lora_alpha=8,
    ... )
    >>> hidden, lengths = backbone(torch.randn(2, 10, 160), torch.tensor([1.0, 0.6]))
    >>> hidden.shape
    torch.Size([3, 2, 10, 32])
    >>> type(backbone.eval().model.encoder.layers[0].self_attn).__name__
    'MemoryEfficientWav2Vec2BertSelfAttention'
    >>> type(backbone.train().model.encoder.layers[0].self_attn).__name__
    'Wav2Vec2BertSelfAttention'
    """

    def __init__(
        self,
        source=None,
        config=None,
        freeze=False,
        lora_rank=0,
        lora_alpha=128.0,
        lora_dropout=0.0,
        lora_target_modules=("linear_q", "linear_v"),
        gradient_checkpointing=False,
        cache_dir=None,
        memory_efficient_attention="inference",
    ):
        super().__init__()
        config = config or None
        if (source is None) == (config is None):
            raise ValueError("W2VBertBackbone needs exactly one of `source` or `config`.")
        memory_efficient_attention_on(memory_efficient_attention, False)  # checks it first
        if source is not None:
            self.model = load_w2vbert(source, cache_dir=cache_dir)
        else:
            self.model = AutoModel.from_config(build_w2vbert_config(config))
        # Never used with masking off, and unused parameters break DDP.
        if hasattr(self.model, "masked_spec_embed"):
            del self.model.masked_spec_embed

        self.freeze = freeze
        if freeze:
            self.model.requires_grad_(False)
        if lora_rank > 0:
            self._inject_lora(lora_rank, lora_alpha, lora_dropout, list(lora_target_modules))
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        # Last: the switch covers the final modules (LoRA wraps only the projections).
        self.memory_efficient_attention = memory_efficient_attention

    @property
    def memory_efficient_attention(self):
        """The attention setting: True, False or ``"inference"`` (see the class);
        assigning it switches the attention modules at once."""
        return self._memory_efficient_attention

    @memory_efficient_attention.setter
    def memory_efficient_attention(self, policy):
        training = self.training and not (self.freeze and not self.has_lora)
        enabled = memory_efficient_attention_on(policy, training)
        self._memory_efficient_attention = policy
        for module in self.model.modules():
            # Only modules in the other state switch, so that switched ones keep a
            # query_chunk_size set on them.
            if isinstance(module, Wav2Vec2BertSelfAttention) and enabled != isinstance(
                module, MemoryEfficientWav2Vec2BertSelfAttention
            ):
                enable_memory_efficient_attention(module, enabled=enabled)

    def train(self, mode=True):
        """Sets train or eval mode (``eval()`` calls ``train(False)``) and the attention
        path that ``memory_efficient_attention`` chooses for it.

        Arguments
        ---------
        mode : bool
            True: train mode; False: eval mode.

        Returns
        -------
        W2VBertBackbone
            This module.
        """
        super().train(mode)
        self.memory_efficient_attention = self._memory_efficient_attention
        return self

    @property
    def num_hidden_states(self):
        """Number of hidden states returned: feature projection + every layer."""
        return self.model.config.num_hidden_layers + 1

    @property
    def hidden_size(self):
        """Width of every hidden state."""
        return self.model.config.hidden_size

    @property
    def has_lora(self):
        """Whether LoRA adapters are currently injected."""
        return any(isinstance(m, LoraLayer) for m in self.model.modules())

    def _inject_lora(self, rank, alpha, dropout, target_modules):
        # inject_adapter_in_model keeps the HF model itself: peft's PeftModel wrapper
        # would pass `input_ids`, which Wav2Vec2BertModel rejects.
        lora_config = LoraConfig(
            r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules
        )
        self.model = inject_adapter_in_model(lora_config, self.model)
        # inject_adapter_in_model freezes everything but the adapters; undo that when the
        # encoder is meant to train along.
        if not self.freeze:
            self.model.requires_grad_(True)

    def merge_lora(self):
        """Fold the LoRA updates into the encoder weights and remove the adapters."""
        for name, module in list(self.model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                setattr(parent, child, module.get_base_layer())
        if not self.freeze:
            self.model.requires_grad_(True)
        # A frozen encoder without LoRA gets no gradients: "inference" may switch now.
        self.memory_efficient_attention = self._memory_efficient_attention

    def merged_model(self):
        """A plain `Wav2Vec2BertModel` with LoRA folded in (this module is unchanged).

        Returns
        -------
        transformers.Wav2Vec2BertModel
            A copy ready for `save_pretrained`.
        """
        merged = copy.deepcopy(self)
        merged.merge_lora()
        return merged.model

    def save_pretrained(self, folder):
        """Save the encoder (LoRA merged) as a plain HF model folder."""
        self.merged_model().save_pretrained(folder)

    @staticmethod
    def _merge_lora_state(state_dict, prefix):
        """Fold LoRA entries of a state dict into the base weights they adapt."""
        lora_a_keys = [k for k in state_dict if k.startswith(prefix) and ".lora_A." in k]
        for a_key in lora_a_keys:
            base = a_key.split(".lora_A.")[0]
            adapter = a_key.split(".lora_A.")[1].split(".")[0]
            lora_a = state_dict.pop(a_key)
            lora_b = state_dict.pop(f"{base}.lora_B.{adapter}.weight")
            scaling = state_dict.pop(f"{base}.lora_scaling.{adapter}").item()
            weight = state_dict.pop(f"{base}.base_layer.weight")
            state_dict[f"{base}.weight"] = weight + scaling * (lora_b @ lora_a)
            bias_key = f"{base}.base_layer.bias"
            if bias_key in state_dict:
                state_dict[f"{base}.bias"] = state_dict.pop(bias_key)

    def state_dict(self, *args, **kwargs):
        """State dict; LoRA layers also store their scaling so a plain backbone can merge it."""
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        for name, module in self.named_modules():
            if isinstance(module, LoraLayer):
                for adapter, scaling in module.scaling.items():
                    state[f"{prefix}{name}.lora_scaling.{adapter}"] = torch.tensor(scaling)
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A LoRA checkpoint loads into a backbone without LoRA by merging it on the fly:
        # this is how a stage starts from the previous stage with LoRA merged.
        if not self.has_lora:
            self._merge_lora_state(state_dict, prefix)
        # The scalings of a LoRA backbone come from its own config: not parameters.
        for key in [k for k in state_dict if k.startswith(prefix) and ".lora_scaling." in k]:
            state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, feats, lengths=None):
        """Run the encoder and return every hidden state.

        Arguments
        ---------
        feats : torch.Tensor
            Front-end features [B, T, 160].
        lengths : torch.Tensor, optional
            Relative lengths [B] of the feature sequences.

        Returns
        -------
        hidden_states : torch.Tensor
            [L + 1, B, T, D]: the feature projection output then each layer's output.
        lengths : torch.Tensor
            Relative lengths [B] (unchanged: no subsampling).
        """
        if lengths is None:
            lengths = torch.ones(feats.shape[0], device=feats.device)
        no_grad = self.freeze and not self.has_lora
        with torch.set_grad_enabled(torch.is_grad_enabled() and not no_grad):
            hidden = encoder_hidden_states(self.model, feats, lengths)
        return hidden, lengths
