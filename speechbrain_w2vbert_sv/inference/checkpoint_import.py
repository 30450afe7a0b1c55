"""Import the released w2v-BERT 2.0 speaker checkpoints as exported model folders.

Two source formats hold the same model (w2v-BERT 2.0 encoder, one Layer Adapter per
hidden state, attentive statistics pooling, a linear bottleneck):

- ``paper``: a checkpoint file of the paper's training code,
  ``{"modules": {"spk_model": state, "classifier": state}, ...}`` with encoder keys
  ``front.encoder.<HF key>``;
- ``wespeaker``: WeSpeaker's model folder, ``config.yaml`` + ``avg_model.pt`` (a flat
  state dict, or one under ``state_dict``) with encoder keys ``frontend.encoder.<HF key>``
  and the AAM classifier under ``projection.*``.

Both have ``adapter_layers.*``, ``pooling.attention.*`` and ``bottleneck.*``; a LoRA
(stage-1) encoder has ``...encoder.base_model.model.<HF key>`` with ``lora_A``/``lora_B``
weights, merged here with the scaling alpha / r of the source's configuration.
``import_checkpoint`` writes the folder that ``w2vbert-sv export`` writes
(``hyperparams.yaml``, ``embedding_model.ckpt``) plus a model card (``README.md``); the
classifier is left out. Every check runs before anything is written.

Command line: ``w2vbert-sv import --format {paper,wespeaker} --checkpoint PATH --output
FOLDER``.

Example
-------
>>> import tempfile
>>> from speechbrain_w2vbert_sv.inference.interface import load_model
>>> from speechbrain_w2vbert_sv.inference.wespeaker_export import wespeaker_state_dict
>>> tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
...         "intermediate_size": 64}
>>> folder = tempfile.mkdtemp()
>>> state = wespeaker_state_dict(random_model_state(tiny, adapter_size=8,
...                                                 embedding_size=16))
>>> torch.save(state, f"{folder}/avg_model.pt")
>>> _ = pathlib.Path(folder, "config.yaml").write_text("model: W2VBert_Adapter_MFA\\n")
>>> out = import_checkpoint(folder, "wespeaker", f"{folder}/imported")
>>> load_model(out).encode_batch(torch.randn(1, 16000)).shape
torch.Size([1, 1, 16])
"""

import datetime
import logging
import pathlib
import pickle
import re
import zipfile

import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from transformers import Wav2Vec2BertConfig

from speechbrain_w2vbert_sv.inference.model_card import CARD_FILE, model_card
from speechbrain_w2vbert_sv.inference.model_yaml import (
    HPARAMS_FILE,
    WEIGHTS_FILE,
    encoder_config,
    inference_hparams_text,
)
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone, build_w2vbert_config

logger = logging.getLogger(__name__)

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

_ENCODER_PREFIX = {PAPER: "front.encoder.", WESPEAKER: "frontend.encoder."}
_LORA_WRAPPER = "base_model.model."
# Head keys of the sources -> this package's embedding model.
_HEAD_PREFIXES = {
    "adapter_layers.": "head.adapters.",
    "pooling.attention.": "head.pooling.attention.",
    "bottleneck.": "head.embedding.",
}
_OURS_ENCODER = "backbone.model."
# Parts that inference does not use: WeSpeaker's AAM classifier, HF's masking vector.
_DROPPED = ("projection.",)


def _fail(source, message):
    raise ValueError(f"{source}: {message}")


def _few(keys, count=4):
    keys = sorted(keys)
    more = f" (and {len(keys) - count} more)" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def load_torch_file(path):
    """Reads a checkpoint file (tensors and plain containers only) on the CPU.

    Arguments
    ---------
    path : str or os.PathLike
        The file.

    Returns
    -------
    object
        What ``torch.save`` stored.

    Raises
    ------
    ValueError
        A missing, truncated or non-PyTorch file, or one holding other objects.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        _fail(path, "no such file")
    with open(path, "rb") as f:
        start = f.read(4)
    # torch.save writes a zip archive (b"PK..."), or a pickle (protocol byte 0x80).
    if not start.startswith((b"PK", b"\x80")):
        _fail(
            path,
            "not a PyTorch checkpoint (neither torch.save's zip archive nor its "
            "legacy pickle format)",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().split(". ")[0]
        _fail(
            path,
            f"holds objects other than tensors and plain containers, which are "
            f"not loaded ({first})",
        )
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        _fail(path, f"not a complete PyTorch checkpoint, truncated or damaged ({first})")


class _TagIgnoringLoader(yaml.SafeLoader):
    """Reads HyperPyYAML (``!new:``, ``!apply:``, ``!ref``...) as plain YAML values."""


def _untagged(loader, suffix, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_TagIgnoringLoader.add_multi_constructor("!", _untagged)


def read_yaml(path):
    """A YAML or HyperPyYAML file as plain values (tags ignored, nothing built).

    Arguments
    ---------
    path : str or os.PathLike
        The file.

    Returns
    -------
    dict
    """
    path = pathlib.Path(path)
    if not path.is_file():
        _fail(path, "no such file")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_TagIgnoringLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        _fail(path, f"not a YAML file ({str(error).splitlines()[0]})")
    if not isinstance(tree, dict):
        _fail(path, "not a YAML mapping")
    return tree


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
    prefix = _ENCODER_PREFIX[fmt]
    other = _ENCODER_PREFIX[WESPEAKER if fmt == PAPER else PAPER]
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
                out[_OURS_ENCODER + rest] = value
            continue
        for theirs, ours in _HEAD_PREFIXES.items():
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
        _fail(
            origin,
            f"unknown keys for the {fmt} format: {_few(unknown)}{hint}; expected "
            f"{prefix}*, adapter_layers.*, pooling.attention.*, bottleneck.*",
        )
    if wrapped and plain:
        _fail(
            origin,
            f"mixed key sets: LoRA-wrapped encoder keys ({_few(wrapped, 2)}) next to plain "
            f"ones ({_few(plain, 2)})",
        )
    lora_outside = [k for k in plain if ".lora_" in k or ".base_layer." in k]
    if lora_outside:
        _fail(
            origin,
            f"mixed key sets: LoRA keys outside {prefix}{_LORA_WRAPPER}: {_few(lora_outside)}",
        )
    if not any(k.startswith(_OURS_ENCODER) for k in out):
        _fail(
            origin,
            f"no encoder weights ({prefix}*): not a {fmt} checkpoint of the w2v-BERT speaker model",
        )
    if not any(k.startswith("head.") for k in out):
        _fail(origin, "no speaker head (adapter_layers.*, pooling.attention.*, bottleneck.*)")
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
        _fail(checkpoint, "no such file or folder")
    tree = {}
    if fmt == WESPEAKER:
        folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
        weights = folder / WESPEAKER_WEIGHTS if checkpoint.is_dir() else checkpoint
        config = pathlib.Path(config) if config else folder / WESPEAKER_CONFIG
        if not config.is_file():
            _fail(
                config,
                "missing: a WeSpeaker model folder holds config.yaml beside "
                "avg_model.pt (give another one with --config)",
            )
        tree = read_yaml(config)
        if not weights.is_file():
            _fail(weights, "missing: a WeSpeaker model folder holds avg_model.pt")
        loaded = load_torch_file(weights)
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict):
            _fail(weights, f"not a state dict (a {type(loaded).__name__})")
        state, origin = loaded, str(weights)
    else:
        if config:
            tree = read_yaml(config)
        loaded = load_torch_file(checkpoint)
        modules = loaded.get("modules") if isinstance(loaded, dict) else None
        if not isinstance(modules, dict) or not isinstance(modules.get("spk_model"), dict):
            _fail(
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
        _fail(source.origin, f"LoRA weights of different ranks {sorted(ranks)}")
    rank = ranks.pop()
    if source.lora_rank is not None and int(source.lora_rank) != rank:
        _fail(
            source.origin,
            f"LoRA rank {rank} in the weights but r={source.lora_rank} in the configuration",
        )
    scaling = source.lora_alpha / rank
    for key in [k for k in state if ".lora_A." in k]:
        base, adapter = key.split(".lora_A.")[0], key.split(".lora_A.")[1].split(".")[0]
        for needed in (f"{base}.lora_B.{adapter}.weight", f"{base}.base_layer.weight"):
            if needed not in state:
                _fail(source.origin, f"LoRA weights incomplete: {key} without {needed}")
        state[f"{base}.lora_scaling.{adapter}"] = torch.tensor(scaling)
    W2VBertBackbone._merge_lora_state(state, _OURS_ENCODER)
    stray = [k for k in state if ".base_layer." in k or ".lora_" in k]
    if stray:
        _fail(source.origin, f"mixed key sets: LoRA layers without LoRA weights: {_few(stray)}")
    given = "from the source's configuration" if source.lora_alpha_given else "default"
    return (
        f"LoRA merged into the encoder: rank {rank}, alpha {source.lora_alpha:g} ({given}), "
        f"scaling alpha/r = {scaling:g}"
    )


def _layer_size(state, layer, name, dim=0):
    weight = state.get(f"{_OURS_ENCODER}encoder.layers.{layer}.{name}.weight")
    return 0 if weight is None else int(weight.shape[dim])


def config_from_state(state, origin="checkpoint"):
    """The encoder configuration that the shapes of a state dict imply.

    The w2v-BERT 2.0 configuration (``Wav2Vec2BertConfig()``'s defaults) with the sizes
    read from the weights; per-layer sizes that differ give a pruned configuration.

    Arguments
    ---------
    state : dict
        ``backbone.model.<HF key>`` tensors (LoRA merged).
    origin : str
        Named in errors.

    Returns
    -------
    dict
        Keyword arguments of the configuration (``model_type`` set for a pruned one).
    """
    get = state.get
    projection = get(f"{_OURS_ENCODER}feature_projection.projection.weight")
    if projection is None:
        _fail(origin, "no feature_projection.projection.weight: cannot tell the encoder's size")
    hidden, feature_dim = (int(s) for s in projection.shape)
    pattern = re.compile(re.escape(_OURS_ENCODER) + r"encoder\.layers\.(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    layers = max(indices) + 1 if indices else 0
    standard = Wav2Vec2BertConfig()
    config = {
        "hidden_size": hidden,
        "feature_projection_input_dim": feature_dim,
        "num_hidden_layers": layers,
    }
    distance = next(
        (v for k, v in state.items() if k.endswith("self_attn.distance_embedding.weight")), None
    )
    if distance is not None:
        positions, head_size = (int(s) for s in distance.shape)
        if positions != (
            standard.left_max_position_embeddings + standard.right_max_position_embeddings + 1
        ):
            _fail(
                origin,
                f"relative positions of {positions} offsets differ from w2v-BERT "
                "2.0's: give the encoder configuration with --w2vbert_source",
            )
        config["num_attention_heads"] = hidden // head_size
    else:
        config["num_attention_heads"] = standard.num_attention_heads
        head_size = hidden // config["num_attention_heads"]
    kernel = next(
        (v for k, v in state.items() if k.endswith("conv_module.depthwise_conv.weight")), None
    )
    if kernel is not None:
        config["conv_depthwise_kernel_size"] = int(kernel.shape[-1])
    sizes = {
        "layer_attention_heads": [
            _layer_size(state, i, "self_attn.linear_q") // head_size for i in range(layers)
        ],
        "layer_ffn1_units": [
            _layer_size(state, i, "ffn1.intermediate_dense") for i in range(layers)
        ],
        "layer_ffn2_units": [
            _layer_size(state, i, "ffn2.intermediate_dense") for i in range(layers)
        ],
        "layer_conv_channels": [
            _layer_size(state, i, "conv_module.depthwise_conv") for i in range(layers)
        ],
    }
    ffn = sizes["layer_ffn1_units"] + sizes["layer_ffn2_units"]
    config["intermediate_size"] = max(ffn) if ffn else standard.intermediate_size
    if hidden == standard.hidden_size:
        config["intermediate_size"] = max(config["intermediate_size"], standard.intermediate_size)
    full = {
        "layer_attention_heads": config["num_attention_heads"],
        "layer_ffn1_units": config["intermediate_size"],
        "layer_ffn2_units": config["intermediate_size"],
        "layer_conv_channels": hidden,
    }
    if any(s != full[name] for name, values in sizes.items() for s in values):
        config.update(sizes, model_type="pruned-wav2vec2-bert")
    # Every field of the configuration: the exported folder must not depend on the
    # defaults of a later transformers version.
    merged = {**encoder_config({"w2vbert_source": None, "w2vbert_config": {}}), **config}
    return encoder_config({"w2vbert_source": None, "w2vbert_config": merged})


def head_settings(state, origin="checkpoint"):
    """The sizes of the MFA head read from its weights.

    Arguments
    ---------
    state : dict
        ``head.*`` tensors.
    origin : str
        Named in errors.

    Returns
    -------
    dict
        ``num_hidden_states``, ``hidden_size``, ``adapter_size``,
        ``attention_channels``, ``embedding_size``.
    """
    needed = (
        "head.adapters.0.0.weight",
        "head.pooling.attention.0.weight",
        "head.embedding.weight",
    )
    missing = [k for k in needed if k not in state]
    if missing:
        _fail(origin, f"incomplete speaker head: missing {_few(missing)}")
    count = len({k.split(".")[2] for k in state if k.startswith("head.adapters.")})
    adapter_size, hidden = state["head.adapters.0.0.weight"].shape
    return {
        "num_hidden_states": count,
        "hidden_size": int(hidden),
        "adapter_size": int(adapter_size),
        "attention_channels": int(state["head.pooling.attention.0.weight"].shape[0]),
        "embedding_size": int(state["head.embedding.weight"].shape[0]),
    }


def convert(source, w2vbert_source=None):
    """Builds the model of a source checkpoint and loads its weights (all checks).

    Arguments
    ---------
    source : SourceCheckpoint
        From :func:`read_source` (its LoRA weights are merged in place).
    w2vbert_source : str, optional
        Hub id or folder whose ``config.json`` describes the encoder (default: the
        source's own encoder folder if it names one, else the weights' shapes).

    Returns
    -------
    settings : dict
        The model settings of ``hyperparams.yaml``.
    model : torch.nn.Module
        The embedding model with the source's weights, in eval mode.
    notes : list of str
        What the conversion did (LoRA merge, encoder configuration).
    """
    notes = []
    merged = merge_lora(source)
    if merged:
        notes.append(merged)
    state, origin = source.state, source.origin
    config_source = w2vbert_source or source.w2vbert_source
    if config_source:
        config = encoder_config({"w2vbert_source": config_source})
        notes.append(f"encoder configuration from {config_source}")
    else:
        config = config_from_state(state, origin)
        notes.append("encoder configuration: w2v-BERT 2.0's, sizes read from the weights")
    head = head_settings(state, origin)
    num_states = config["num_hidden_layers"] + 1
    if head["num_hidden_states"] != num_states:
        _fail(
            origin,
            f"the head has {head['num_hidden_states']} layer adapters but the "
            f"encoder returns {num_states} hidden states (its "
            f"{config['num_hidden_layers']} layers + the feature projection)",
        )
    if head["hidden_size"] != config["hidden_size"]:
        _fail(
            origin,
            f"the layer adapters take {head['hidden_size']} inputs but the encoder's "
            f"hidden size is {config['hidden_size']}",
        )
    settings = {
        "w2vbert_source": None,
        "w2vbert_config": config,
        "w2vbert_cache_dir": None,
        "freeze_backbone": False,
        "lora_rank": 0,
        "gradient_checkpointing": False,
        **head,
        "pooling_eps": SOURCE_POOLING_EPS,
    }
    model = load_hyperpyyaml(inference_hparams_text(settings))["embedding_model"]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        _fail(origin, f"missing weights: {_few(_source_names(missing, source.fmt))}")
    extra = [k for k in state if k not in expected]
    if extra:
        _fail(origin, f"unknown keys for this model: {_few(_source_names(extra, source.fmt))}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            name = _source_names([key], source.fmt)[0]
            _fail(
                origin,
                f"shape mismatch: {name} is {tuple(state[key].shape)} in the "
                f"checkpoint but {tuple(tensor.shape)} in the model",
            )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return settings, model.eval(), notes


def _source_names(keys, fmt):
    """This package's keys written the way the source names them (for messages)."""
    back = {ours: theirs for theirs, ours in _HEAD_PREFIXES.items()}
    back[_OURS_ENCODER] = _ENCODER_PREFIX[fmt]
    names = []
    for key in keys:
        for ours, theirs in back.items():
            if key.startswith(ours):
                key = theirs + key[len(ours) :]
                break
        names.append(key)
    return names


def import_checkpoint(checkpoint, fmt, output, w2vbert_source=None, config=None, threshold=None):
    """Converts a paper-code or WeSpeaker checkpoint into an exported model folder.

    Arguments
    ---------
    checkpoint : str or os.PathLike
        The checkpoint file (``paper``) or WeSpeaker model folder / ``avg_model.pt``.
    fmt : str
        ``paper`` or ``wespeaker``.
    output : str or os.PathLike
        Folder to write (``hyperparams.yaml``, ``embedding_model.ckpt``, ``README.md``).
    w2vbert_source : str, optional
        Hub id or folder whose ``config.json`` describes the encoder.
    config : str or os.PathLike, optional
        The source's configuration (LoRA alpha, the encoder folder).
    threshold : float, optional
        Decision threshold to store (default: the template's).

    Returns
    -------
    pathlib.Path
        The output folder.
    """
    source = read_source(checkpoint, fmt, config)
    settings, model, notes = convert(source, w2vbert_source)
    header = (
        f"# Imported by speechbrain_w2vbert_sv {datetime.date.today()} from the {fmt} "
        f"checkpoint {pathlib.Path(source.origin).name}.\n"
        + "".join(f"# {note}.\n" for note in notes)
    )
    text = inference_hparams_text(settings, threshold, header)
    card = model_card(
        settings,
        origin={"format": fmt, "file": pathlib.Path(source.origin).name, "notes": notes},
    )
    out = pathlib.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / HPARAMS_FILE).write_text(text, encoding="utf-8")
    torch.save(model.state_dict(), out / WEIGHTS_FILE)
    (out / CARD_FILE).write_text(card, encoding="utf-8")
    for note in notes:
        logger.info("%s", note)
    return out


def random_model_state(
    config, adapter_size=128, attention_channels=None, embedding_size=256, seed=0
):
    """A random embedding model's state dict of a given encoder config (tests, benchmarks).

    Arguments
    ---------
    config : dict
        Encoder configuration (keyword arguments).
    adapter_size, attention_channels, embedding_size : int
        Head sizes (``attention_channels`` defaults to ``adapter_size``, as both sources
        build their pooling).
    seed : int
        Random seed.

    Returns
    -------
    dict
        This package's state dict, pooling statistics randomised too.
    """
    torch.manual_seed(seed)
    config = build_w2vbert_config(config)
    settings = {
        "w2vbert_source": None,
        "w2vbert_config": encoder_config({"w2vbert_source": None, "w2vbert_config": config}),
        "num_hidden_states": config.num_hidden_layers + 1,
        "hidden_size": config.hidden_size,
        "adapter_size": adapter_size,
        "attention_channels": attention_channels or adapter_size,
        "embedding_size": embedding_size,
    }
    model = load_hyperpyyaml(inference_hparams_text(settings))["embedding_model"]
    state = model.state_dict()
    norm = "head.pooling.attention.2."
    state[norm + "running_mean"].normal_(0.0, 0.1)
    state[norm + "running_var"].uniform_(0.5, 2.0)
    return state
