"""Import the released w2v-BERT 2.0 speaker checkpoints as exported model folders.

Two source formats hold the same model (w2v-BERT 2.0 encoder, one Layer Adapter per
hidden state, attentive statistics pooling, a linear bottleneck):

- ``paper``: a checkpoint file of the paper's training code,
  ``{"modules": {"spk_model": state, "classifier": state}, ...}`` with encoder keys
  ``front.encoder.<HF key>`` (a pruned encoder leaves out the feed-forward and attention
  blocks pruned whole);
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

import contextlib
import datetime
import pathlib
import re

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.logger import get_logger
from transformers import Wav2Vec2BertConfig

from speechbrain_w2vbert_sv.inference.mapped_pages import releasing_mapped_pages
from speechbrain_w2vbert_sv.inference.model_card import CARD_FILE, model_card
from speechbrain_w2vbert_sv.inference.model_yaml import (
    HPARAMS_FILE,
    WEIGHTS_FILE,
    encoder_config,
    inference_hparams_text,
)
from speechbrain_w2vbert_sv.inference.source_checkpoints import (
    OURS_ENCODER_PREFIX,
    SOURCE_ENCODER_PREFIX,
    SOURCE_HEAD_PREFIXES,
    SOURCE_POOLING_EPS,
    few_keys,
    import_error,
    merge_lora,
    read_source,
)
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import build_w2vbert_config

logger = get_logger(__name__)


def _layer_size(state, layer, name, dim=0):
    weight = state.get(f"{OURS_ENCODER_PREFIX}encoder.layers.{layer}.{name}.weight")
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
    projection = get(f"{OURS_ENCODER_PREFIX}feature_projection.projection.weight")
    if projection is None:
        import_error(
            origin, "no feature_projection.projection.weight: cannot tell the encoder's size"
        )
    hidden, feature_dim = (int(s) for s in projection.shape)
    pattern = re.compile(re.escape(OURS_ENCODER_PREFIX) + r"encoder\.layers\.(\d+)\.")
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
            import_error(
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
        import_error(origin, f"incomplete speaker head: missing {few_keys(missing)}")
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
        import_error(
            origin,
            f"the head has {head['num_hidden_states']} layer adapters but the "
            f"encoder returns {num_states} hidden states (its "
            f"{config['num_hidden_layers']} layers + the feature projection)",
        )
    if head["hidden_size"] != config["hidden_size"]:
        import_error(
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
    with parameters_on_meta():
        model = load_hyperpyyaml(inference_hparams_text(settings))["embedding_model"]
    expected = model.state_dict()
    _fill_removed_blocks(state, expected)
    missing = [k for k in expected if k not in state]
    if missing:
        import_error(origin, f"missing weights: {few_keys(_source_names(missing, source.fmt))}")
    extra = [k for k in state if k not in expected]
    if extra:
        import_error(
            origin, f"unknown keys for this model: {few_keys(_source_names(extra, source.fmt))}"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            name = _source_names([key], source.fmt)[0]
            import_error(
                origin,
                f"shape mismatch: {name} is {tuple(state[key].shape)} in the "
                f"checkpoint but {tuple(tensor.shape)} in the model",
            )
    # The source's (memory-mapped) tensors become the parameters: no second copy.
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, assign=True)
    return settings, model.eval(), notes


# A feed-forward or attention block of one encoder layer, its layer norm included.
_BLOCK = re.compile(r"encoder\.layers\.(\d+)\.(ffn1|ffn2|self_attn)(?:_layer_norm)?\.")


@contextlib.contextmanager
def parameters_on_meta():
    """Modules built inside get their parameters on the meta device.

    Nothing is allocated or initialised for them, so that an import holds the model's
    weights once (the source's, assigned by ``load_state_dict(assign=True)``), not a
    random model beside them. Buffers stay real: the front end computes its
    constants when built. (``torch.device("meta")`` would move those too.)

    Example
    -------
    >>> with parameters_on_meta():
    ...     layer = torch.nn.BatchNorm1d(4)
    >>> layer.weight.device.type, layer.running_mean.device.type
    ('meta', 'cpu')
    """
    register = torch.nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None:
            param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def _fill_removed_blocks(state, expected):
    """Adds the weights of the zero-width blocks that the source left out (in place).

    The paper's pruning removes a feed-forward or attention block pruned to zero width
    whole (its modeling file sets the module to None: no weights, and its forward skips
    the block); the pruned model here keeps such a block with empty layers. Its output
    bias is set to zero, so that the block adds nothing, as skipping it does; its layer
    norm gets the values it is built with (ones, zeros; its output goes to an empty
    layer). A missing block of non-zero width is left to the missing-weights check.
    """
    blocks = {}
    for key in expected:
        if match := _BLOCK.search(key):
            blocks.setdefault(match.groups(), []).append(key)
    for keys in blocks.values():
        widths = [k for k in keys if k.endswith(("intermediate_dense.weight", "linear_q.weight"))]
        if any(k in state for k in keys) or any(expected[k].numel() for k in widths):
            continue
        for key in keys:
            tensor = expected[key]  # on the meta device: shape and dtype only
            fill = torch.ones if key.endswith("layer_norm.weight") else torch.zeros
            state[key] = fill(tensor.shape, dtype=tensor.dtype)


def _source_names(keys, fmt):
    """This package's keys written the way the source names them (for messages)."""
    back = {ours: theirs for theirs, ours in SOURCE_HEAD_PREFIXES.items()}
    back[OURS_ENCODER_PREFIX] = SOURCE_ENCODER_PREFIX[fmt]
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
    # Writing touches every page of the mapped source: dropped as it goes, they do not
    # add the whole file to the resident memory (the import's peak, benchmarks/interop.py).
    with releasing_mapped_pages(source.origin):
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
