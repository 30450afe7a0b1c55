"""Reading the published w2v-BERT 2.0 speaker checkpoints: files, configurations, keys.

The paper's training code and WeSpeaker hold the same model under different key names
(see :mod:`speechbrain_w2vbert_sv.inference.checkpoint_import`). :func:`read_source`
reads either format into a :class:`SourceCheckpoint` with this package's key names,
checking every key and shape it can before anything is written, and
:func:`merge_lora` folds a LoRA (stage-1) encoder into plain weights.
"""

import pathlib

import torch

from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
from speechbrain_w2vbert_sv.utils import load_checkpoint_file, read_yaml

PAPER = "paper"
WESPEAKER = "wespeaker"
FORMATS = (PAPER, WESPEAKER)
WESPEAKER_CONFIG = "config.yaml"
WESPEAKER_WEIGHTS = "avg_model.pt"
# The variance floor of both sources' attentive statistics pooling.
SOURCE_POOLING_EPS = 1e-5
# LoRA alpha when the source's configuration does not say: the paper's configs use
# r 64 / alpha 128; WeSpeaker's create_lora_config defaults to alpha 32.
DEFAULT_LORA_ALPHA = {PAPER: 128.0, WESPEAKER: 32.0}

SOURCE_ENCODER_PREFIX = {PAPER: "front.encoder.", WESPEAKER: "frontend.encoder."}
_LORA_WRAPPER = "base_model.model."
# Head keys of the sources -> this package's embedding model.
SOURCE_HEAD_PREFIXES = {
    "adapter_layers.": "head.adapters.",
    "pooling.attention.": "head.pooling.attention.",
    "bottleneck.": "head.embedding.",
}
OURS_ENCODER_PREFIX = "backbone.model."
# Parts that inference does not use: WeSpeaker's AAM classifier, HF's masking vector.
_DROPPED = ("projection.",)


def import_error(source, message):
    """Raises the one-line error of an import: ``<source>: <message>``."""
    raise ValueError(f"{source}: {message}")


def few_keys(keys, count=4):
    """The first ``count`` of some keys, sorted, for an error message."""
    keys = sorted(keys)
    more = f" (and {len(keys) - count} more)" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def _find_key(tree, key):
    """The first value of ``key`` in nested mappings (depth first), or None."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


class SourceCheckpoint:
    """A source checkpoint read into this package's layout (nothing converted yet).

    Arguments
    ---------
    state : dict
        ``backbone.model.<HF key>`` (LoRA keys unmerged) and ``head.*`` tensors.
    origin : str
        The file read, for messages.
    fmt : str
        ``paper`` or ``wespeaker``.
    lora_alpha : float
        LoRA alpha of the source's configuration (used only with LoRA keys).
    lora_alpha_given : bool
        Whether the configuration stated alpha (else a default).
    lora_rank : int, optional
        The configuration's LoRA rank, checked against the weights' shapes.
    w2vbert_source : str, optional
        Where the encoder configuration can be read (a folder), if the source says.
    """

    def __init__(
        self, state, origin, fmt, lora_alpha, lora_alpha_given, lora_rank=None, w2vbert_source=None
    ):
        self.state = state
        self.origin = origin
        self.fmt = fmt
        self.lora_alpha = float(lora_alpha)
        self.lora_alpha_given = lora_alpha_given
        self.lora_rank = lora_rank
        self.w2vbert_source = w2vbert_source

    @property
    def has_lora(self):
        """Whether the encoder carries unmerged LoRA weights."""
        return any(".lora_A." in k for k in self.state)


def _rename(state, fmt, origin):
    """Source keys -> this package's keys; unknown or mixed key sets fail."""
    prefix = SOURCE_ENCODER_PREFIX[fmt]
    other = SOURCE_ENCODER_PREFIX[WESPEAKER if fmt == PAPER else PAPER]
    out, unknown, wrapped, plain = {}, [], [], []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            unknown.append(key)
            continue
        if key.startswith(_DROPPED):
            continue
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if rest.startswith(_LORA_WRAPPER):
                rest = rest[len(_LORA_WRAPPER) :]
                wrapped.append(key)
            else:
                plain.append(key)
            if rest != "masked_spec_embed":
                out[OURS_ENCODER_PREFIX + rest] = value
            continue
        for theirs, ours in SOURCE_HEAD_PREFIXES.items():
            if key.startswith(theirs):
                out[ours + key[len(theirs) :]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        hint = ""
        if any(k.startswith(other) for k in unknown):
            hint = (
                f" (keys of the other format: try --format {WESPEAKER if fmt == PAPER else PAPER})"
            )
        import_error(
            origin,
            f"unknown keys for the {fmt} format: {few_keys(unknown)}{hint}; expected "
            f"{prefix}*, adapter_layers.*, pooling.attention.*, bottleneck.*",
        )
    if wrapped and plain:
        import_error(
            origin,
            f"mixed key sets: LoRA-wrapped encoder keys ({few_keys(wrapped, 2)}) next to plain "
            f"ones ({few_keys(plain, 2)})",
        )
    lora_outside = [k for k in plain if ".lora_" in k or ".base_layer." in k]
    if lora_outside:
        import_error(
            origin,
            f"mixed key sets: LoRA keys outside {prefix}{_LORA_WRAPPER}: {few_keys(lora_outside)}",
        )
    if not any(k.startswith(OURS_ENCODER_PREFIX) for k in out):
        import_error(
            origin,
            f"no encoder weights ({prefix}*): not a {fmt} checkpoint of the w2v-BERT speaker model",
        )
    if not any(k.startswith("head.") for k in out):
        import_error(
            origin, "no speaker head (adapter_layers.*, pooling.attention.*, bottleneck.*)"
        )
    return out


def read_source(checkpoint, fmt, config=None):
    """Reads a paper-code or WeSpeaker checkpoint into this package's key layout.

    Arguments
    ---------
    checkpoint : str or os.PathLike
        ``paper``: the checkpoint file. ``wespeaker``: the model folder (with
        ``config.yaml`` and ``avg_model.pt``) or its ``avg_model.pt``.
    fmt : str
        ``paper`` or ``wespeaker``.
    config : str or os.PathLike, optional
        The source's configuration (the paper's training yaml; for WeSpeaker, a
        ``config.yaml`` other than the one beside the weights).

    Returns
    -------
    SourceCheckpoint
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    checkpoint = pathlib.Path(checkpoint)
    if not checkpoint.exists():
        import_error(checkpoint, "no such file or folder")
    tree = {}
    if fmt == WESPEAKER:
        folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
        weights = folder / WESPEAKER_WEIGHTS if checkpoint.is_dir() else checkpoint
        config = pathlib.Path(config) if config else folder / WESPEAKER_CONFIG
        if not config.is_file():
            import_error(
                config,
                "missing: a WeSpeaker model folder holds config.yaml beside "
                "avg_model.pt (give another one with --config)",
            )
        tree = read_yaml(config)
        if not weights.is_file():
            import_error(weights, "missing: a WeSpeaker model folder holds avg_model.pt")
        loaded = load_checkpoint_file(weights)
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict):
            import_error(weights, f"not a state dict (a {type(loaded).__name__})")
        state, origin = loaded, str(weights)
    else:
        if config:
            tree = read_yaml(config)
        loaded = load_checkpoint_file(checkpoint)
        modules = loaded.get("modules") if isinstance(loaded, dict) else None
        if not isinstance(modules, dict) or not isinstance(modules.get("spk_model"), dict):
            import_error(
                checkpoint,
                "not a checkpoint of the paper's code: expected "
                "{'modules': {'spk_model': state dict, ...}}",
            )
        state, origin = modules["spk_model"], str(checkpoint)

    lora = _find_key(tree, "lora_config_args") if fmt == WESPEAKER else None
    lora = lora if isinstance(lora, dict) else _find_key(tree, "peft_config") or {}
    alpha = lora.get("lora_alpha") if isinstance(lora, dict) else None
    rank = lora.get("r") if isinstance(lora, dict) else None
    encoder_folder = None
    model_name = _find_key(tree.get("dataset_args", {}), "model_name") if fmt == WESPEAKER else None
    if model_name:
        for candidate in (
            (checkpoint if checkpoint.is_dir() else checkpoint.parent) / str(model_name),
            pathlib.Path(str(model_name)),
        ):
            if (candidate / "config.json").is_file():
                encoder_folder = str(candidate)
                break
    return SourceCheckpoint(
        _rename(state, fmt, origin),
        origin,
        fmt,
        lora_alpha=DEFAULT_LORA_ALPHA[fmt] if alpha is None else alpha,
        lora_alpha_given=alpha is not None,
        lora_rank=rank,
        w2vbert_source=encoder_folder,
    )


def merge_lora(source):
    """Folds the source's LoRA weights into the encoder weights (in place).

    Arguments
    ---------
    source : SourceCheckpoint

    Returns
    -------
    str or None
        What was merged, for the output and the model card (None without LoRA).
    """
    state = source.state
    ranks = {v.shape[0] for k, v in state.items() if ".lora_A." in k}
    if not ranks:
        return None
    if len(ranks) > 1:
        import_error(source.origin, f"LoRA weights of different ranks {sorted(ranks)}")
    rank = ranks.pop()
    if source.lora_rank is not None and int(source.lora_rank) != rank:
        import_error(
            source.origin,
            f"LoRA rank {rank} in the weights but r={source.lora_rank} in the configuration",
        )
    scaling = source.lora_alpha / rank
    for key in [k for k in state if ".lora_A." in k]:
        base, adapter = key.split(".lora_A.")[0], key.split(".lora_A.")[1].split(".")[0]
        for needed in (f"{base}.lora_B.{adapter}.weight", f"{base}.base_layer.weight"):
            if needed not in state:
                import_error(source.origin, f"LoRA weights incomplete: {key} without {needed}")
        state[f"{base}.lora_scaling.{adapter}"] = torch.tensor(scaling)
    W2VBertBackbone._merge_lora_state(state, OURS_ENCODER_PREFIX)
    stray = [k for k in state if ".base_layer." in k or ".lora_" in k]
    if stray:
        import_error(
            source.origin, f"mixed key sets: LoRA layers without LoRA weights: {few_keys(stray)}"
        )
    given = "from the source's configuration" if source.lora_alpha_given else "default"
    return (
        f"LoRA merged into the encoder: rank {rank}, alpha {source.lora_alpha:g} ({given}), "
        f"scaling alpha/r = {scaling:g}"
    )
