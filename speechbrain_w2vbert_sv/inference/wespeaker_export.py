"""Export a w2v-BERT 2.0 + MFA model to WeSpeaker's format (``config.yaml`` + ``avg_model.pt``).

WeSpeaker's loader (``wespeaker.cli.speaker.load_model_pt``) builds
``W2VBert_Adapter_MFA(**model_args)``, adds ``W2VBertFrontend(**dataset_args.w2vbert_args)``
as its ``frontend`` and loads ``avg_model.pt`` into it. The frontend first loads the
encoder named by ``model_name`` (its weights are then replaced by ``avg_model.pt``):
the hub id ``facebook/w2v-bert-2.0`` for an encoder of its published architecture (as
WeSpeaker's own published config names it), else a folder written beside
(``w2vbert/``: the encoder config and weights, and the feature extractor's settings),
named ``w2vbert``. Neither names the output folder, so it can be moved, archived or
uploaded. WeSpeaker's frontend takes ``model_name`` as it is (its ``download_dir`` is
not used), so it reads the relative ``w2vbert`` against the working directory: load
such a folder from inside it, or set ``model_name`` to its ``w2vbert/`` path (the
model card says so); this package's own import reads it beside ``config.yaml``.

A model card (``README.md``) goes along: the source folder's (origin, licence, known
results) with WeSpeaker's usage lines, or a new one.

Command line: ``w2vbert-sv export --format wespeaker --model FOLDER --output FOLDER``.

Example
-------
>>> wespeaker_state_dict({"backbone.model.encoder.x": torch.ones(1),
...                       "head.embedding.weight": torch.ones(1)}).keys()
dict_keys(['frontend.encoder.encoder.x', 'bottleneck.weight'])
"""

import pathlib

import torch
import yaml
from speechbrain.utils.logger import get_logger
from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig

from speechbrain_w2vbert_sv.inference.model_card import (
    CARD_FILE,
    USE_HEADING,
    WESPEAKER_USAGE,
    model_card,
)
from speechbrain_w2vbert_sv.lobes.heads import MFAHead
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone

logger = get_logger(__name__)

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "avg_model.pt"
ENCODER_FOLDER = "w2vbert"
# The one step a folder with its own encoder needs (WeSpeaker resolves model_name
# against the working directory), for its model card.
ENCODER_FOLDER_NOTE = (
    "This model's encoder is not `facebook/w2v-bert-2.0`'s architecture: it is in "
    "`w2vbert/`, which `config.yaml` names as `model_name: w2vbert`. WeSpeaker reads that "
    "name relative to the working directory, so load this folder from inside it "
    '(`cd` into it, then `wespeaker.load_model(".")`), or set '
    "`dataset_args.w2vbert_args.model_name` to the full path of its `w2vbert/`."
)
HUB_ID = "facebook/w2v-bert-2.0"
# WeSpeaker's attentive statistics pooling floors the variance at this value.
WESPEAKER_POOLING_EPS = 1e-5
_ARCHITECTURE = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "feature_projection_input_dim",
    "conv_depthwise_kernel_size",
    "position_embeddings_type",
    "left_max_position_embeddings",
    "right_max_position_embeddings",
    "hidden_act",
    "layer_norm_eps",
    "add_adapter",
)
_KEY_MAP = {
    "backbone.model.": "frontend.encoder.",
    "head.adapters.": "adapter_layers.",
    "head.pooling.attention.": "pooling.attention.",
    "head.embedding.": "bottleneck.",
}


def wespeaker_state_dict(state):
    """This package's embedding-model state dict in WeSpeaker's key layout.

    Arguments
    ---------
    state : dict
        ``backbone.model.*`` and ``head.*`` tensors (LoRA merged).

    Returns
    -------
    dict
        ``frontend.encoder.*``, ``adapter_layers.*``, ``pooling.attention.*``,
        ``bottleneck.*``.
    """
    out = {}
    for key, value in state.items():
        for ours, theirs in _KEY_MAP.items():
            if key.startswith(ours):
                out[theirs + key[len(ours) :]] = value
                break
        else:
            raise ValueError(f"{key}: no place for it in WeSpeaker's W2VBert_Adapter_MFA")
    return out


def is_published_architecture(config):
    """Whether an encoder has ``facebook/w2v-bert-2.0``'s architecture (the
    ``Wav2Vec2BertConfig()`` defaults are its published config), so that WeSpeaker's
    frontend can build it from the hub id.

    Arguments
    ---------
    config : transformers.PretrainedConfig
        The encoder's config.

    Returns
    -------
    bool

    Example
    -------
    >>> is_published_architecture(Wav2Vec2BertConfig())
    True
    >>> is_published_architecture(Wav2Vec2BertConfig(num_hidden_layers=12))
    False
    """
    published = Wav2Vec2BertConfig()
    return all(getattr(config, k, None) == getattr(published, k, None) for k in _ARCHITECTURE)


def export_wespeaker(model, output, w2vbert_source=None):
    """Writes a model as WeSpeaker's ``config.yaml`` + ``avg_model.pt``.

    Arguments
    ---------
    model : str or os.PathLike or W2VBertSpeakerRecognition
        An exported folder, a training output/checkpoint folder, or a loaded interface.
    output : str or os.PathLike
        Folder to write.
    w2vbert_source : str, optional
        ``model_name`` of WeSpeaker's frontend (a hub id or a folder with the encoder
        and ``preprocessor_config.json``); default: ``facebook/w2v-bert-2.0`` when the
        encoder has its published architecture, else ``w2vbert``, the folder written
        here (relative: see the module's notes).

    Returns
    -------
    pathlib.Path
        The output folder.
    """
    from speechbrain_w2vbert_sv.inference.interface import load_model

    name = str(model) if not hasattr(model, "mods") else "the model"
    if not hasattr(model, "mods"):
        model = load_model(model)
    embedding_model = model.mods.embedding_model
    backbone = getattr(embedding_model, "backbone", None)
    head = getattr(embedding_model, "head", None)
    if not isinstance(backbone, W2VBertBackbone) or not isinstance(head, MFAHead):
        raise ValueError(
            f"{name}: WeSpeaker's W2VBert_Adapter_MFA holds a w2v-BERT encoder "
            "with an MFA head only"
        )
    config = backbone.model.config
    if config.model_type != Wav2Vec2BertConfig.model_type:
        raise ValueError(
            f"{name}: a {config.model_type} encoder: WeSpeaker's frontend builds "
            "unpruned Wav2Vec2BertModel encoders only"
        )
    adapter_size = head.adapters[0][0].out_features
    attention_channels = head.pooling.attention[0].out_channels
    if attention_channels != adapter_size:
        raise ValueError(
            f"{name}: WeSpeaker's pooling has as many attention channels as "
            f"the adapters' width ({adapter_size}), this model {attention_channels}"
        )
    if head.pooling.eps != WESPEAKER_POOLING_EPS:
        logger.warning(
            "WeSpeaker's pooling floors the variance at %g, this model at %g: embeddings "
            "differ where a channel's pooled variance lies between the two",
            WESPEAKER_POOLING_EPS,
            head.pooling.eps,
        )
    out = pathlib.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    own_encoder = w2vbert_source is None and not is_published_architecture(config)
    if own_encoder:
        encoder_folder = out / ENCODER_FOLDER
        backbone.model.save_pretrained(encoder_folder)
        SeamlessM4TFeatureExtractor().save_pretrained(encoder_folder)
        # Relative, so that the folder still works after a move (see the card).
        w2vbert_source = ENCODER_FOLDER
    elif w2vbert_source is None:
        w2vbert_source = HUB_ID
    settings = {
        "model": "W2VBert_Adapter_MFA",
        "model_args": {
            "feat_dim": config.hidden_size,
            "embed_dim": head.embedding.out_features,
            "pooling_func": "ASP",
            "n_mfa_layers": -1,
            "adapter_dim": adapter_size,
            "dropout": 0.0,
            "num_frontend_hidden_layers": config.num_hidden_layers,
        },
        "dataset_args": {
            "frontend": "w2vbert",
            "resample_rate": model.hparams.sample_rate,
            "w2vbert_args": {"model_name": w2vbert_source, "frozen": True, "use_lora": False},
        },
    }
    state = {k: v.detach().cpu() for k, v in embedding_model.state_dict().items()}
    torch.save(wespeaker_state_dict(state), out / WEIGHTS_FILE)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    usage = WESPEAKER_USAGE
    if own_encoder:
        usage += f"\n{ENCODER_FOLDER_NOTE}\n"
    (out / CARD_FILE).write_text(_card(model, name, usage), encoding="utf-8")
    return out


def _card(model, name, usage):
    """The source folder's model card (its origin and licence go along) with WeSpeaker's
    usage (a template with ``{source}``), or a new card."""
    source_card = pathlib.Path(name) / CARD_FILE
    if source_card.is_file():
        text = source_card.read_text(encoding="utf-8")
        head, _, _ = text.partition(f"\n{USE_HEADING}\n")
        return f"{head}\n{USE_HEADING}\n\n{usage.format(source='<this folder>')}"
    return model_card(model.hparams.model, source="<this folder>", usage=usage)
