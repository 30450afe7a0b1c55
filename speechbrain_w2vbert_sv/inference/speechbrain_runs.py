"""Runs of SpeechBrain's own ``train_speaker_embeddings.py`` as this package's models.

SpeechBrain's speaker recipes build their model in four slots, called in this order:
``compute_features(wavs)``, ``mean_var_norm(feats, lens)``, ``embedding_model(feats,
lens)``, ``classifier(emb)``. A run whose ``embedding_model`` is one of this package's
lobes reads here as a model definition of ``hparams/`` with its settings (what
:func:`speechbrain_w2vbert_sv.inference.model_yaml.model_section_settings` gives for
this package's own runs), so that the export writes the usual folder. Two layouts
are read:

- the lobes made for the slots (``hparams/speechbrain_recipes/``): a
  :class:`~speechbrain_w2vbert_sv.lobes.embedding_model.FeatureEmbeddingModel` after
  ``W2VBertLogMel`` + ``W2VBertFeatureNormalization``, or after SpeechBrain's
  ``Fbank`` + ``InputNormalization`` (an MFA-Conformer);
- the whole waveform-in :class:`SpeakerEmbeddingModel` in ``embedding_model``, after
  ``torch.nn.Identity`` and SpeechBrain's ``InputNormalization`` on the waveform.

Every step that changes the embeddings is carried over or refused with the reason.
"""

import inspect
import io

import ruamel.yaml
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.parameter_transfer import Pretrainer

from speechbrain_w2vbert_sv.utils import load_checkpoint_file

PACKAGE = "speechbrain_w2vbert_sv"
FEATURE_MODEL = f"{PACKAGE}.lobes.embedding_model.FeatureEmbeddingModel"
WAVEFORM_MODEL = f"{PACKAGE}.lobes.embedding_model.SpeakerEmbeddingModel"
W2VBERT_FBANK = f"{PACKAGE}.lobes.w2vbert_frontend.W2VBertFbank"
W2VBERT_LOG_MEL = f"{PACKAGE}.lobes.w2vbert_frontend.W2VBertLogMel"
W2VBERT_NORMALIZATION = f"{PACKAGE}.lobes.w2vbert_frontend.W2VBertFeatureNormalization"
CONFORMER_FBANK = f"{PACKAGE}.lobes.conformer_frontend.ConformerFbank"
W2VBERT_BACKBONE = f"{PACKAGE}.lobes.w2vbert_backbone.W2VBertBackbone"
CONFORMER_BACKBONE = f"{PACKAGE}.lobes.conformer_backbone.ConformerBackbone"
MFA_HEAD = f"{PACKAGE}.lobes.heads.MFAHead"
SB_FBANK = "speechbrain.lobes.features.Fbank"
SB_NORMALIZATION = "speechbrain.processing.features.InputNormalization"
PASS_THROUGH = ("torch.nn.Identity", f"{PACKAGE}.inference.interface.PassThrough")
SLOTS = ("compute_features", "mean_var_norm", "embedding_model")
SUPPORTED = (
    "embedding_model: FeatureEmbeddingModel (after W2VBertLogMel + "
    "W2VBertFeatureNormalization, or SpeechBrain's Fbank + InputNormalization) or the "
    "waveform-in SpeakerEmbeddingModel (after torch.nn.Identity), with a W2VBertBackbone "
    "or ConformerBackbone and an MFAHead, as in hparams/speechbrain_recipes/"
)


def is_speechbrain_run(tree):
    """Whether a parsed training yaml is a SpeechBrain recipe's: its model in the
    recipe slots rather than in this package's ``model`` section.

    Arguments
    ---------
    tree : dict
        The parsed, resolved yaml.

    Returns
    -------
    bool

    Example
    -------
    >>> is_speechbrain_run({"compute_features": None, "embedding_model": None})
    True
    >>> is_speechbrain_run({"model": {}, "embedding_model": None})
    False
    """
    return isinstance(tree, dict) and "model" not in tree and "embedding_model" in tree


def node_class(node):
    """The dotted class a ``!new:`` node builds (None for any other node)."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(tag, str) and tag.startswith("!new:"):
        return tag[len("!new:") :]
    return None


def _arguments(node, cls_path):
    """Keyword arguments of a ``!new:`` node, with the class's defaults filled in."""
    from speechbrain_w2vbert_sv.inference.model_yaml import plain_values

    module, _, name = cls_path.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    defaults = {
        key: p.default
        for key, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    if isinstance(node, list):
        raise ValueError(f"{cls_path} built with positional arguments: name them")
    given = plain_values(node) if isinstance(node, dict) else {}
    return {**defaults, **given}


def _refuse(source, problem):
    return ValueError(f"{source}: {problem}; the export supports {SUPPORTED}")


def _same(values, defaults, what, source):
    """Refuses settings that differ from those of the exported definition."""
    for key, value in values.items():
        expected = defaults.get(key)
        if isinstance(expected, tuple):
            expected = list(expected)
        if value != expected:
            raise _refuse(
                source,
                f"{what} has {key}={value!r}, the exported model's is {expected!r}: "
                "not carried over",
            )


def _w2vbert_settings(backbone, head, source):
    b = _arguments(backbone, W2VBERT_BACKBONE)
    h = _arguments(head, MFA_HEAD)
    return "w2vbert_mfa.yaml", {
        "model_type": "w2vbert_mfa",
        "w2vbert_source": b["source"],
        "w2vbert_config": b["config"] or {},
        "w2vbert_cache_dir": b["cache_dir"],
        "freeze_backbone": b["freeze"],
        "lora_rank": b["lora_rank"],
        "lora_alpha": b["lora_alpha"],
        "lora_dropout": b["lora_dropout"],
        "lora_target_modules": list(b["lora_target_modules"]),
        "gradient_checkpointing": b["gradient_checkpointing"],
        "num_hidden_states": h["num_hidden_states"],
        "hidden_size": h["input_size"],
        "adapter_size": h["adapter_size"],
        "attention_channels": h["attention_channels"],
        "embedding_size": h["embedding_size"],
        "pooling_eps": h["pooling_eps"],
    }


# ConformerBackbone arguments that conformer_mfa.yaml leaves at their defaults.
_CONFORMER_FIXED = ("cnn_kernel_sizes", "cnn_strides", "attention_type", "activation")


def _conformer_settings(backbone, head, frontend, source):
    """conformer_mfa.yaml's settings; ``frontend``: sample_rate, n_fft, n_mels, norm_type."""
    b = _arguments(backbone, CONFORMER_BACKBONE)
    h = _arguments(head, MFA_HEAD)
    defaults = _arguments({}, CONFORMER_BACKBONE)
    _same({k: b[k] for k in _CONFORMER_FIXED}, defaults, "ConformerBackbone", source)
    _same({"pooling_eps": h["pooling_eps"]}, _arguments({}, MFA_HEAD), "MFAHead", source)
    if h["num_hidden_states"] != b["num_layers"] + 1 or h["input_size"] != b["d_model"]:
        raise _refuse(source, "the MFAHead does not fit the ConformerBackbone's layers")
    if b["n_mels"] != frontend["n_mels"]:
        raise _refuse(
            source, f"the features have {frontend['n_mels']} mel bins, the backbone {b['n_mels']}"
        )
    return "conformer_mfa.yaml", {
        "model_type": "conformer_mfa",
        **frontend,
        "cnn_channels": list(b["cnn_channels"]),
        "d_model": b["d_model"],
        "nhead": b["nhead"],
        "num_layers": b["num_layers"],
        "d_ffn": b["d_ffn"],
        "kernel_size": b["kernel_size"],
        "dropout": b["dropout"],
        "freeze_backbone": b["freeze"],
        "adapter_size": h["adapter_size"],
        "attention_channels": h["attention_channels"],
        "embedding_size": h["embedding_size"],
    }


def _conformer_features(fbank, normalization, source):
    """The ConformerFbank settings of SpeechBrain's Fbank + InputNormalization."""
    f = _arguments(fbank, SB_FBANK)
    n = _arguments(normalization, SB_NORMALIZATION)
    ours = _arguments({}, CONFORMER_FBANK)
    fixed = {k: f[k] for k in f if k not in ("sample_rate", "n_fft", "n_mels")}
    sb_defaults = _arguments({}, SB_FBANK)
    sb_defaults.update(win_length=ours["win_length"], hop_length=ours["hop_length"])
    _same(fixed, sb_defaults, "Fbank", source)
    if n["norm_type"] not in ("sentence", "global") or not n["std_norm"]:
        raise _refuse(
            source,
            f"InputNormalization(norm_type={n['norm_type']!r}, std_norm={n['std_norm']}) is "
            "not the Conformer front end's normalisation (sentence or global, std_norm)",
        )
    _same({"epsilon": n["epsilon"]}, {"epsilon": ours["epsilon"]}, "InputNormalization", source)
    return {
        "sample_rate": f["sample_rate"],
        "n_fft": f["n_fft"],
        "n_mels": f["n_mels"],
        "norm_type": n["norm_type"],
    }


def _waveform_normalization(node, frontend_class, source):
    """Whether a normalisation of the waveform is carried over (True: it changes
    nothing for this front end) or refused."""
    cls = node_class(node)
    if cls in PASS_THROUGH:
        return
    if cls == SB_NORMALIZATION and frontend_class == W2VBERT_FBANK:
        n = _arguments(node, SB_NORMALIZATION)
        # W2VBertFbank removes each frame's DC offset, and normalises each mel bin
        # per utterance, which cancels a gain: a per-utterance mean and scale of the
        # waveform leave its features as they are.
        if n["norm_type"] == "sentence":
            return
    raise _refuse(
        source,
        f"mean_var_norm {cls or node!r} normalises the waveform before {frontend_class}, "
        "which the exported model would not do (only per-utterance InputNormalization "
        "before W2VBertFbank leaves the features unchanged)",
    )


def speechbrain_run_settings(tree, source):
    """The model definition and settings of a SpeechBrain recipe run.

    Arguments
    ---------
    tree : dict
        The run's parsed, resolved yaml (``is_speechbrain_run``).
    source : str or os.PathLike
        Its file, named in errors.

    Returns
    -------
    definition : str
        ``w2vbert_mfa.yaml`` or ``conformer_mfa.yaml``.
    settings : dict
        The definition's settings.

    Example
    -------
    >>> import ruamel.yaml
    >>> tree = ruamel.yaml.YAML().load('''
    ... compute_features: !new:speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertLogMel
    ... mean_var_norm:
    ...   !new:speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertFeatureNormalization
    ... embedding_model: !new:speechbrain_w2vbert_sv.lobes.embedding_model.FeatureEmbeddingModel
    ...   backbone: !new:speechbrain_w2vbert_sv.lobes.w2vbert_backbone.W2VBertBackbone
    ...     source: facebook/w2v-bert-2.0
    ...     lora_rank: 64
    ...   head: !new:speechbrain_w2vbert_sv.lobes.heads.MFAHead
    ... ''')
    >>> definition, settings = speechbrain_run_settings(tree, "hyperparams.yaml")
    >>> definition, settings["lora_rank"], settings["embedding_size"]
    ('w2vbert_mfa.yaml', 64, 256)
    """
    for slot in SLOTS:
        if slot not in tree:
            raise _refuse(source, f"no `{slot}`")
    features, normalization, model = (tree[slot] for slot in SLOTS)
    model_class = node_class(model)
    if model_class not in (FEATURE_MODEL, WAVEFORM_MODEL) or not isinstance(model, dict):
        raise _refuse(source, f"embedding_model is {model_class or 'not a !new: object'}")
    backbone, head = model.get("backbone"), model.get("head")
    backbone_class, head_class = node_class(backbone), node_class(head)
    if head_class != MFA_HEAD or backbone_class not in (W2VBERT_BACKBONE, CONFORMER_BACKBONE):
        raise _refuse(source, f"the embedding model is {backbone_class} + {head_class}")

    if model_class == WAVEFORM_MODEL:
        if node_class(features) not in PASS_THROUGH:
            raise _refuse(
                source,
                f"compute_features {node_class(features)} computes features before a "
                "waveform-in SpeakerEmbeddingModel",
            )
        frontend = model.get("frontend")
        frontend_class = node_class(frontend)
        _waveform_normalization(normalization, frontend_class, source)
        if frontend_class == W2VBERT_FBANK and backbone_class == W2VBERT_BACKBONE:
            defaults = _arguments({}, W2VBERT_FBANK)
            _same(_arguments(frontend, W2VBERT_FBANK), defaults, "W2VBertFbank", source)
            return _w2vbert_settings(backbone, head, source)
        if frontend_class == CONFORMER_FBANK and backbone_class == CONFORMER_BACKBONE:
            f = _arguments(frontend, CONFORMER_FBANK)
            defaults = _arguments({}, CONFORMER_FBANK)
            fixed = {k: f[k] for k in ("win_length", "hop_length", "epsilon")}
            _same(fixed, defaults, "ConformerFbank", source)
            settings = {k: f[k] for k in ("sample_rate", "n_fft", "n_mels", "norm_type")}
            return _conformer_settings(backbone, head, settings, source)
        raise _refuse(source, f"the front end {frontend_class} does not fit {backbone_class}")

    feature_classes = (node_class(features), node_class(normalization))
    if feature_classes == (W2VBERT_LOG_MEL, W2VBERT_NORMALIZATION):
        if backbone_class != W2VBERT_BACKBONE:
            raise _refuse(source, "w2v-BERT features before a ConformerBackbone")
        defaults = _arguments({}, W2VBERT_FBANK)
        _same(_arguments(features, W2VBERT_LOG_MEL), defaults, "W2VBertLogMel", source)
        _same(
            _arguments(normalization, W2VBERT_NORMALIZATION),
            defaults,
            "W2VBertFeatureNormalization",
            source,
        )
        return _w2vbert_settings(backbone, head, source)
    if feature_classes == (SB_FBANK, SB_NORMALIZATION):
        if backbone_class != CONFORMER_BACKBONE:
            raise _refuse(source, "SpeechBrain's Fbank before a W2VBertBackbone")
        frontend = _conformer_features(features, normalization, source)
        return _conformer_settings(backbone, head, frontend, source)
    raise _refuse(
        source, f"compute_features + mean_var_norm are {' + '.join(map(str, feature_classes))}"
    )


def speechbrain_run_state(tree, checkpoint, model):
    """The state dict of the exported model from a SpeechBrain run's checkpoint.

    A ``FeatureEmbeddingModel``'s ``embedding_model.ckpt`` holds the backbone and the
    head; the front end's entries come from ``model`` (none for w2v-BERT) and, for
    a global ``InputNormalization``, its statistics from the run's ``normalizer``.

    Arguments
    ---------
    tree : dict
        The run's parsed yaml.
    checkpoint : pathlib.Path
        The checkpoint folder (``CKPT+...``).
    model : torch.nn.Module
        The exported ``SpeakerEmbeddingModel`` (its front end's own state is used).

    Returns
    -------
    dict
        State dict for ``model``.
    """
    state = load_checkpoint_file(checkpoint / "embedding_model.ckpt")
    if node_class(tree["embedding_model"]) == WAVEFORM_MODEL:
        return state
    frontend = model.frontend
    for key, value in frontend.state_dict().items():
        state.setdefault(f"frontend.{key}", value)
    stats = _global_statistics_file(tree, checkpoint)
    if stats is not None:
        frontend.load_normalizer(load_checkpoint_file(stats))
        state.update({f"frontend.{k}": v for k, v in frontend.state_dict().items()})
    return state


def _global_statistics_file(tree, checkpoint):
    """The checkpoint file of a global ``InputNormalization`` in ``mean_var_norm`` (its
    recoverable's name), None for any other normalisation."""
    target = tree["mean_var_norm"]
    if node_class(target) != SB_NORMALIZATION:
        return None
    if _arguments(target, SB_NORMALIZATION)["norm_type"] != "global":
        return None
    recoverables = (tree.get("checkpointer") or {}).get("recoverables") or {}
    for name, node in recoverables.items():
        if node is target:
            path = checkpoint / f"{name}.ckpt"
            if path.is_file():
                return path
    raise ValueError(
        f"{checkpoint}: the global statistics of mean_var_norm are not in the checkpoint "
        "(add mean_var_norm to the checkpointer's recoverables): they cannot be carried over"
    )


def speechbrain_pipeline(tree, checkpoint):
    """The run's own model as SpeechBrain's scripts call it, for the export check.

    Arguments
    ---------
    tree : dict
        The run's parsed yaml.
    checkpoint : pathlib.Path
        The checkpoint folder.

    Returns
    -------
    callable
        ``(wavs, wav_lens) -> embeddings [B, 1, E]``:
        ``embedding_model(mean_var_norm(compute_features(wavs), lens), lens)``.
    """
    yaml = ruamel.yaml.YAML()
    text = io.StringIO()
    yaml.dump({slot: tree[slot] for slot in SLOTS}, text)
    slots = load_hyperpyyaml(text.getvalue())
    model = slots["embedding_model"]
    model.load_state_dict(load_checkpoint_file(checkpoint / "embedding_model.ckpt"))
    normalization = slots["mean_var_norm"]
    stats = _global_statistics_file(tree, checkpoint)
    if stats is not None:
        normalization._load(str(stats))
    for module in slots.values():
        module.eval()

    def embed(wavs, wav_lens):
        with torch.no_grad():
            feats = slots["compute_features"](wavs)
            feats = normalization(feats, wav_lens)
            return model(feats, wav_lens)

    return embed


class RecipePretrainer(Pretrainer):
    """SpeechBrain's ``Pretrainer`` whose ``load_collected`` also takes the device
    argument that SpeechBrain's v1.1 recipe ``extract_speaker_embeddings.py`` passes
    (``load_collected(run_opts["device"])``), which SpeechBrain 1.1.2's no longer
    accepts. The script moves the model to that device itself right after.

    Arguments
    ---------
    See ``speechbrain.utils.parameter_transfer.Pretrainer``.

    Example
    -------
    >>> model = torch.nn.Linear(2, 2)
    >>> folder = getfixture("tmp_path")
    >>> torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    >>> pretrainer = RecipePretrainer(
    ...     collect_in=folder / "collected", loadables={"embedding_model": model},
    ...     paths={"embedding_model": str(folder / "embedding_model.ckpt")})
    >>> _ = pretrainer.collect_files()
    >>> pretrainer.load_collected("cpu")
    """

    def load_collected(self, device=None):
        """Loads the collected files.

        Arguments
        ---------
        device : str, optional
            Ignored (the recipe moves the loaded model to its device).
        """
        del device
        super().load_collected()
