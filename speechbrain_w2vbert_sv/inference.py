"""The pretrained speaker-verification interface and the export of training runs.

``export_model`` turns a training run (any stage; LoRA merged into the weights) into
a folder that ``from_hparams`` loads offline: ``hyperparams.yaml`` (the template
``hparams/inference.yaml`` with the run's model definition inlined:
``w2vbert_mfa.yaml`` with the encoder config written in and ``w2vbert_source: null``,
``conformer_mfa.yaml`` for an MFA-Conformer, ``speaker_adaptor.yaml`` for a speaker
adaptor, whose ``ASRSpeakerRecognition`` interface also transcribes) and
``embedding_model.ckpt``.
``W2VBertSpeakerRecognition`` loads such a folder, or a training run directly
(``from_run``), and embeds and verifies waveforms and files. SpeechBrain's stock
``EncoderClassifier`` and ``SpeakerRecognition`` load the folder too and give the
same embeddings: their ``encode_batch`` chain (compute_features -> mean_var_norm ->
embedding_model) is served by two ``PassThrough`` modules and the waveform-to-
embedding model (``classify_batch`` is not available: no classifier is exported).

Command line: ``w2vbert-sv export --run <output folder> --output <folder>``.

Example
-------
>>> small = {"w2vbert_source": None, "w2vbert_config": {"hidden_size": 32, "num_hidden_layers": 2,
...     "num_attention_heads": 4, "intermediate_size": 64}, "num_hidden_states": 3,
...     "hidden_size": 32, "adapter_size": 8, "attention_channels": 4, "embedding_size": 16}
>>> hparams = load_hyperpyyaml(inference_hparams_text(small, threshold=0.5))
>>> model = W2VBertSpeakerRecognition(modules=hparams["modules"], hparams=hparams)
>>> score, same = model.verify_batch(torch.randn(2, 16000), torch.randn(2, 16000))
>>> score.shape, same.dtype
(torch.Size([2, 1]), torch.bool)
"""

import datetime
import importlib
import io
import logging
import os
import pathlib

import ruamel.yaml
import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.inference.speaker import SpeakerRecognition
from speechbrain.utils.data_utils import split_path
from speechbrain.utils.fetching import fetch
from transformers import AutoConfig, PretrainedConfig

from speechbrain_w2vbert_sv.attention import enable_memory_efficient_attention
from speechbrain_w2vbert_sv.audio import load_audio
from speechbrain_w2vbert_sv.backbones.w2vbert import build_w2vbert_config
from speechbrain_w2vbert_sv.brain import AtomicCheckpointer, best_checkpoint
from speechbrain_w2vbert_sv.extraction import autocast_context, embed_files

logger = logging.getLogger(__name__)

# hparams/ sits beside the package in the repository and inside it once installed.
_HPARAMS = pathlib.Path(__file__).resolve().parent / "hparams"
if not _HPARAMS.is_dir():
    _HPARAMS = pathlib.Path(__file__).resolve().parents[1] / "hparams"
TEMPLATE = _HPARAMS / "inference.yaml"
HPARAMS_FILE = "hyperparams.yaml"
WEIGHTS_FILE = "embedding_model.ckpt"

# Settings of the `model` section that only matter in training, or that the export
# replaces: the encoder is built from its config and LoRA is merged into the weights.
_INFERENCE_SETTINGS = {
    "w2vbert_source": None,
    "w2vbert_cache_dir": None,
    "freeze_backbone": False,
    "lora_rank": 0,
    "gradient_checkpointing": False,
}
_LORA_SETTINGS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules")
_DEFAULT_DEFINITION = "w2vbert_mfa.yaml"
# Parts of a trained embedding model that inference does not use.
_TRAINING_ONLY_PREFIXES = ("ctc_lin.", "projections.")


class PassThrough(torch.nn.Module):
    """Returns its first input unchanged (ignores the others, e.g. lengths).

    Stands in for the feature and normalisation steps of SpeechBrain's stock
    ``EncoderClassifier.encode_batch`` chain: the embedding model takes waveforms.

    Example
    -------
    >>> PassThrough()(torch.ones(2), torch.tensor([1.0, 0.5])).tolist()
    [1.0, 1.0]
    """

    def forward(self, x, *args, **kwargs):
        """Returns ``x``."""
        return x


class W2VBertSpeakerRecognition(SpeakerRecognition):
    """Speaker embeddings and cosine verification with a waveform-to-embedding model.

    Loads an exported folder with ``from_hparams(source=<folder>)`` (offline) or a
    training run with ``from_run``. ``encode_batch`` calls the embedding model
    directly (waveforms and relative lengths in); files are read with
    :func:`speechbrain_w2vbert_sv.audio.load_audio` (any rate or channel count:
    resampled to ``sample_rate`` and downmixed). Decisions compare the cosine score
    with ``threshold`` (from the hyperparameters unless given). The w2v-BERT
    attention runs on the memory-efficient path
    (:mod:`speechbrain_w2vbert_sv.attention`) unless the hyperparameters set
    ``memory_efficient_attention: False``.

    Arguments
    ---------
    See ``speechbrain.inference.interfaces.Pretrained``; the hyperparameters need
    ``sample_rate`` and ``threshold``, the modules ``embedding_model``.
    """

    MODULES_NEEDED = ["embedding_model"]
    HPARAMS_NEEDED = ["sample_rate", "threshold"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        enable_memory_efficient_attention(
            self.mods.embedding_model,
            enabled=getattr(self.hparams, "memory_efficient_attention", True),
        )

    def load_audio(self, path, savedir=None):
        """Reads an audio file as a mono waveform at the model's sample rate.

        Arguments
        ---------
        path : str or os.PathLike
            A local file, or a URL (fetched into ``savedir``).
        savedir : str, optional
            Where a URL is downloaded.

        Returns
        -------
        torch.Tensor
            ``[samples]`` float32 on the model's device.
        """
        path = os.fspath(path)
        if "://" in path:
            source, name = split_path(path)
            path = fetch(name, source=source, savedir=savedir)
        wav = load_audio(path, self.hparams.sample_rate)
        return wav.to(self.device)

    def encode_batch(self, wavs, wav_lens=None, normalize=False):
        """Speaker embeddings of a padded batch of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` (or ``[samples]``) at ``sample_rate``.
        wav_lens : torch.Tensor, optional
            ``[batch]`` relative lengths in (0, 1]; None: all full length.
        normalize : bool
            Not supported (kept for the signature of SpeechBrain's class): the
            model carries no embedding statistics; must be False.

        Returns
        -------
        torch.Tensor
            ``[batch, 1, embedding_size]`` float32.
        """
        if normalize:
            raise ValueError(
                "normalize=True is not supported: the model has no embedding "
                "statistics (subtract a mean embedding with "
                "speechbrain_w2vbert_sv.scoring.mean_embedding instead)"
            )
        wavs = torch.as_tensor(wavs)
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        wavs = wavs.to(self.device).float()
        if wav_lens is not None:
            wav_lens = torch.as_tensor(wav_lens).to(self.device)
        with autocast_context(self.device, self.precision):
            embeddings = self.mods.embedding_model(wavs, wav_lens)
        return embeddings.float()

    def verify_batch(self, wavs1, wavs2, wav1_lens=None, wav2_lens=None, threshold=None):
        """Cosine scores and decisions of pairs of waveform batches.

        Arguments
        ---------
        wavs1, wavs2 : torch.Tensor
            ``[batch, samples]`` waveforms of the two sides of each pair.
        wav1_lens, wav2_lens : torch.Tensor, optional
            ``[batch]`` relative lengths.
        threshold : float, optional
            Decision threshold on the cosine score (default: ``hparams.threshold``).

        Returns
        -------
        score : torch.Tensor
            ``[batch, 1]`` cosine scores.
        decision : torch.Tensor
            ``[batch, 1]`` bool, True for "same speaker" (score above threshold).
        """
        if threshold is None:
            threshold = self.hparams.threshold
        emb1 = self.encode_batch(wavs1, wav1_lens)
        emb2 = self.encode_batch(wavs2, wav2_lens)
        score = self.similarity(emb1, emb2)
        return score, score > threshold

    def verify_files(self, path_x, path_y, threshold=None):
        """Cosine score and decision of two audio files.

        Arguments
        ---------
        path_x, path_y : str or os.PathLike
            Audio files (any rate or channel count).
        threshold : float, optional
            Decision threshold (default: ``hparams.threshold``).

        Returns
        -------
        score : torch.Tensor
            ``[1]`` cosine score.
        decision : torch.Tensor
            ``[1]`` bool, True for "same speaker".
        """
        score, decision = self.verify_batch(
            self.load_audio(path_x)[None], self.load_audio(path_y)[None], threshold=threshold
        )
        return score[0], decision[0]

    def encode_files(self, paths, **kwargs):
        """Embeds a list of files in length-sorted batches, each distinct file once.

        Arguments
        ---------
        paths : sequence of str or os.PathLike
            Audio files.
        **kwargs
            Options of :func:`speechbrain_w2vbert_sv.extraction.embed_files`
            (``batch_seconds``, ``precision``, ``progress``, ...).

        Returns
        -------
        torch.Tensor
            ``[len(paths), embedding_size]`` float32 on the CPU.
        """
        kwargs.setdefault("precision", self.precision)
        kwargs.setdefault("device", self.device)
        return embed_files(
            self.mods.embedding_model, paths, sample_rate=self.hparams.sample_rate, **kwargs
        )

    @classmethod
    def from_run(cls, run, hparams_file=None, overrides=None, threshold=None, **kwargs):
        """Builds the interface from a training run (LoRA merged), writing nothing.

        Arguments
        ---------
        run : str or os.PathLike
            Training output folder (its latest checkpoint is used) or a checkpoint
            folder (``CKPT+...``).
        hparams_file : str or os.PathLike, optional
            Training hyperparameters (default: the run's ``hyperparams.yaml``).
        overrides : dict, optional
            Overrides of the training hyperparameters.
        threshold : float, optional
            Decision threshold (default: the template's).
        **kwargs
            Arguments of the class (``run_opts``, ...).

        Returns
        -------
        W2VBertSpeakerRecognition
        """
        hparams, _ = load_run(run, hparams_file, overrides, threshold)
        return cls(modules=hparams["modules"], hparams=hparams, **kwargs)


def load_model(path, **kwargs):
    """Loads an exported folder or a training run with the interface it names.

    The interface is the class named by ``interface`` in the hyperparameters:
    ``W2VBertSpeakerRecognition`` for speaker models, ``ASRSpeakerRecognition`` for
    a speaker adaptor (transcription too).

    Arguments
    ---------
    path : str or os.PathLike
        Exported folder (``hyperparams.yaml`` + ``embedding_model.ckpt``), training
        output folder or checkpoint folder.
    **kwargs
        Arguments of ``from_hparams`` (``run_opts``, ...), or for a run those of
        the class and ``hparams_file``, ``overrides``, ``threshold``.

    Returns
    -------
    W2VBertSpeakerRecognition
    """
    path = pathlib.Path(path)
    if (path / WEIGHTS_FILE).is_file() and (path / HPARAMS_FILE).is_file() and not (
        path / "CKPT.yaml"
    ).is_file():
        tree = ruamel.yaml.YAML().load((path / HPARAMS_FILE).read_text(encoding="utf-8"))
        interface = interface_class(tree.get("interface"))
        return interface.from_hparams(source=str(path), **kwargs)
    run_args = {k: kwargs.pop(k) for k in ("hparams_file", "overrides", "threshold") if k in kwargs}
    hparams, _ = load_run(path, **run_args)
    interface = interface_class(hparams.get("interface"))
    return interface(modules=hparams["modules"], hparams=hparams, **kwargs)


def interface_class(name=None):
    """The pretrained-interface class of a dotted name (None: the default one).

    Arguments
    ---------
    name : str, optional
        ``package.module.Class``, e.g. the ``interface`` of a ``hyperparams.yaml``.

    Returns
    -------
    type

    Example
    -------
    >>> interface_class().__name__
    'W2VBertSpeakerRecognition'
    """
    if not name:
        return W2VBertSpeakerRecognition
    module, _, cls = str(name).rpartition(".")
    found = getattr(importlib.import_module(module), cls, None) if module else None
    if not (isinstance(found, type) and issubclass(found, W2VBertSpeakerRecognition)):
        raise ValueError(f"interface {name!r} is not a W2VBertSpeakerRecognition class")
    return found


def find_checkpoint(run):
    """The checkpoint folder of a training run: the run itself or its best one.

    Arguments
    ---------
    run : str or os.PathLike
        A checkpoint folder (holding ``CKPT.yaml``), or a training output folder
        whose ``save/`` holds checkpoints (the one with the lowest dev EER is taken,
        else the most recent, as when a training stage starts from the previous).

    Returns
    -------
    pathlib.Path
        The checkpoint folder.
    """
    run = pathlib.Path(run)
    if (run / "CKPT.yaml").is_file():
        return run
    save = run / "save"
    if not save.is_dir():
        raise ValueError(
            f"{run}: not a model folder: expected an exported model ({HPARAMS_FILE} + "
            f"{WEIGHTS_FILE}), a training output folder (with save/) or a checkpoint "
            "folder (with CKPT.yaml)"
        )
    checkpoint = best_checkpoint(AtomicCheckpointer(str(save)))
    if checkpoint is None:
        raise ValueError(f"{save}: no checkpoint found")
    return pathlib.Path(checkpoint.path)


def _plain(node):
    """Plain Python values of a ruamel.yaml node; object nodes (``!new:``...) are left
    out of mappings."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items() if not _is_object(v)}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def _is_object(node):
    """Whether a yaml node builds an object (``!new:``, ``!name:``, ...)."""
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag)
    return isinstance(value, str) and value.startswith("!")


def _read_yaml(hparams_file, overrides=None):
    """A hyperparameter file parsed with references resolved, nothing built."""
    with open(hparams_file, encoding="utf-8") as f:
        resolved = resolve_references(f, overrides or {})
    return ruamel.yaml.YAML().load(resolved)


def _system(section):
    """The definition file of a resolved ``model`` section, told by its keys."""
    if "w2vbert_source" in section:
        return "w2vbert_mfa.yaml"
    if "asr_model" in section and isinstance(section.get("conformer"), dict):
        return "speaker_adaptor.yaml"
    if "d_model" in section:
        return "conformer_mfa.yaml"
    return None


def model_settings(hparams_file, overrides=None):
    """The model definition and settings of a training yaml's ``model`` section.

    Nothing is instantiated: the file is only parsed (``!include`` and ``!ref``
    resolved), so datasets, augmentation and hub weights are not touched.

    Arguments
    ---------
    hparams_file : str or os.PathLike
        The training hyperparameters (SpeechBrain's resolved copy in the output
        folder, or the recipe's yaml with ``overrides`` for its placeholders).
    overrides : dict, optional
        Overrides of the file.

    Returns
    -------
    definition : str
        The file of ``hparams/`` that defines the model: ``w2vbert_mfa.yaml``,
        ``conformer_mfa.yaml`` or ``speaker_adaptor.yaml``.
    settings : dict
        Setting name -> plain value (``w2vbert_source``, ``lora_rank``, sizes...).
    """
    return _model_section(_read_yaml(hparams_file, overrides), hparams_file)


def _model_section(tree, source):
    """``model_settings`` of a parsed training yaml (``source`` names it in errors)."""
    section = tree.get("model") if isinstance(tree, dict) else None
    definition = _system(section) if isinstance(section, dict) else None
    if definition is None:
        raise ValueError(
            f"{source}: no `model` section defined by one of hparams/"
            "w2vbert_mfa.yaml, conformer_mfa.yaml, speaker_adaptor.yaml (`model: "
            "!include:.../w2vbert_mfa.yaml`); the export reads the model from there"
        )
    return definition, _plain(section)


def encoder_config(settings):
    """The encoder config of model settings, as keyword arguments.

    Arguments
    ---------
    settings : dict
        From ``model_settings``: ``w2vbert_source`` (read with ``AutoConfig``: only
        its ``config.json``, from the hub cache or a local folder) or
        ``w2vbert_config``.

    Returns
    -------
    dict
        Keyword arguments of the config (layerdrop and masking off).

    Example
    -------
    >>> encoder_config({"w2vbert_source": None, "w2vbert_config": {"hidden_size": 32}})["hidden_size"]
    32
    """
    source = settings.get("w2vbert_source")
    if source:
        # Importing the pruning package registers the pruned model type.
        import speechbrain_w2vbert_sv.pruning  # noqa: F401

        try:
            config = AutoConfig.from_pretrained(
                source, cache_dir=settings.get("w2vbert_cache_dir")
            )
        except OSError as error:
            raise ValueError(
                f"cannot read the encoder config of w2vbert_source={source!r} ({error}); "
                "it must be in the hub cache or a local folder"
            ) from None
        config = build_w2vbert_config(config)
    else:
        config = build_w2vbert_config(settings.get("w2vbert_config") or {})
    # The config class's own fields: the generic ones of PretrainedConfig (labels,
    # output flags, versions) say nothing about the encoder.
    generic = set(PretrainedConfig().to_dict()) - {"model_type"}
    return {k: v for k, v in config.to_dict().items() if k not in generic}


def inference_hparams_text(settings, threshold=None, header="", definition=None, extra=None):
    """The self-contained ``hyperparams.yaml`` of a model (template filled in).

    Arguments
    ---------
    settings : dict
        Model settings (see ``model_settings``); a w2v-BERT encoder is described by
        its config (see ``encoder_config``) and LoRA is off, unless ``settings``
        keeps ``lora_*`` values on purpose (a reference model before merging).
    threshold : float, optional
        Decision threshold (default: the template's).
    header : str
        Comment lines put on top.
    definition : str, optional
        Model definition file of ``hparams/`` (default: ``w2vbert_mfa.yaml``).
    extra : dict, optional
        Further top-level values (e.g. the ``interface`` class and its settings).

    Returns
    -------
    str
        YAML text, with the model definition inlined (no ``!include``).
    """
    # The settings become the include's overrides, under the template's model line.
    block = io.StringIO()
    ruamel.yaml.YAML().dump({"model": dict(settings)}, block)
    overrides_text = "".join("    " + line for line in block.getvalue().splitlines(True)[1:])
    model_line = f"model: !include:{_DEFAULT_DEFINITION}\n"
    text = TEMPLATE.read_text(encoding="utf-8")
    if model_line not in text:
        raise ValueError(f"{TEMPLATE}: the line {model_line.strip()!r} is missing")
    include = f"model: !include:{definition or _DEFAULT_DEFINITION}\n"
    text = text.replace(model_line, include + overrides_text, 1)
    overrides = dict(extra or {})
    if threshold is not None:
        overrides["threshold"] = float(threshold)
    stream = io.StringIO(text)
    stream.name = str(TEMPLATE)  # includes are found beside the template
    resolved = resolve_references(stream, overrides)
    # The comments of the source files end up in odd places once inlined.
    yaml = ruamel.yaml.YAML()
    tree = yaml.load(resolved)
    _strip_comments(tree)
    out = io.StringIO()
    yaml.dump(tree, out)
    return header + out.getvalue()


def _strip_comments(node):
    if hasattr(node, "ca"):
        node.ca.comment = None
        node.ca.items.clear()
        if hasattr(node.ca, "end"):
            node.ca.end = []
    if isinstance(node, dict):
        for value in node.values():
            _strip_comments(value)
    elif isinstance(node, list):
        for value in node:
            _strip_comments(value)


def _load_weights(module, checkpoint, source):
    """Strictly loads a state dict (a LoRA one merges into a plain backbone), less
    the training-only parts (the auxiliary CTC layer of a distilled student)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    expected = module.state_dict()
    state = {
        k: v for k, v in state.items()
        if k in expected or not k.startswith(_TRAINING_ONLY_PREFIXES)
    }
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"{checkpoint} does not fit the model defined by {source}: {error}"
        ) from None


def _run_files(run, hparams_file):
    checkpoint = find_checkpoint(run)
    weights = checkpoint / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"{checkpoint}: no {WEIGHTS_FILE}")
    if hparams_file is None:
        # SpeechBrain checkpoints live in <output>/save/CKPT+...; the output folder
        # holds the resolved copy of the training yaml.
        hparams_file = checkpoint.parent.parent / HPARAMS_FILE
        if not hparams_file.is_file():
            raise ValueError(
                f"{hparams_file} not found: give the training yaml (--hparams)"
            )
    return checkpoint, weights, hparams_file


def _export_spec(hparams_file, overrides, keep_lora=False):
    """Definition, settings and extra top-level values of a run's inference model."""
    tree = _read_yaml(hparams_file, overrides)
    definition, settings = _model_section(tree, hparams_file)
    extra = {}
    if definition == _DEFAULT_DEFINITION:
        config = encoder_config(settings)
        lora = {k: settings[k] for k in _LORA_SETTINGS if k in settings}
        settings.update(_INFERENCE_SETTINGS, w2vbert_config=config)
        if keep_lora:
            settings.update(lora)
    elif definition == "speaker_adaptor.yaml":
        extra = _asr_outputs(tree.get("asr_folder"), hparams_file)
    return definition, settings, extra


def _asr_outputs(asr_folder, source):
    """The interface settings of an adaptor run: its ASR model's CTC labels."""
    labels = pathlib.Path(str(asr_folder)) / "label_encoder.txt"
    if asr_folder is None or not labels.is_file():
        raise ValueError(
            f"{source}: the ASR model's label_encoder.txt (asr_folder={asr_folder}) "
            "is needed to export a speaker adaptor: its CTC outputs are transcribed"
        )
    encoder = CTCTextEncoder()
    encoder.load(labels)
    return {
        "interface": "speechbrain_w2vbert_sv.speaker_adaptor.ASRSpeakerRecognition",
        "tokens": [encoder.ind2lab[i] for i in range(len(encoder))],
        "blank_index": encoder.lab2ind[encoder.blank_label],
    }


def load_run(run, hparams_file=None, overrides=None, threshold=None):
    """Builds the inference model of a training run, LoRA merged.

    Arguments
    ---------
    run : str or os.PathLike
        Training output folder (latest checkpoint) or checkpoint folder.
    hparams_file : str or os.PathLike, optional
        Training hyperparameters (default: the run's resolved ``hyperparams.yaml``).
    overrides : dict, optional
        Overrides of the training hyperparameters.
    threshold : float, optional
        Decision threshold written into the hyperparameters.

    Returns
    -------
    hparams : dict
        The loaded inference hyperparameters, weights in ``embedding_model``.
    text : str
        Their YAML text (what ``export_model`` writes).
    """
    checkpoint, weights, hparams_file = _run_files(run, hparams_file)
    header = (
        f"# Exported by speechbrain_w2vbert_sv {datetime.date.today()} from "
        f"{checkpoint.name} of {checkpoint.parent.parent.name} (LoRA merged).\n"
    )
    definition, settings, extra = _export_spec(hparams_file, overrides)
    text = inference_hparams_text(settings, threshold, header, definition, extra)
    hparams = load_hyperpyyaml(text)
    _load_weights(hparams["embedding_model"], weights, hparams_file)
    hparams["embedding_model"].eval()
    return hparams, text


def _reference_model(run, hparams_file, overrides):
    """The run's model as trained (LoRA adapters kept), for the export check."""
    _, weights, hparams_file = _run_files(run, hparams_file)
    definition, settings, extra = _export_spec(hparams_file, overrides, keep_lora=True)
    text = inference_hparams_text(settings, definition=definition, extra=extra)
    model = load_hyperpyyaml(text)["embedding_model"]
    _load_weights(model, weights, hparams_file)
    return model.eval()


def export_model(
    run, out, hparams_file=None, overrides=None, threshold=None, check=True, atol=1e-4
):
    """Exports a training run as a folder that ``from_hparams`` loads offline.

    Writes ``hyperparams.yaml`` and ``embedding_model.ckpt`` (LoRA merged) into
    ``out``: the folder to push to a model hub.

    Arguments
    ---------
    run : str or os.PathLike
        Training output folder (latest checkpoint) or checkpoint folder.
    out : str or os.PathLike
        Output folder (created; existing export files are replaced).
    hparams_file : str or os.PathLike, optional
        Training hyperparameters (default: the run's resolved ``hyperparams.yaml``).
    overrides : dict, optional
        Overrides of the training hyperparameters (e.g. placeholders of a recipe
        yaml).
    threshold : float, optional
        Decision threshold on the cosine score (default: the template's).
    check : bool
        Reload the folder with ``from_hparams`` and compare its embeddings of random
        audio with those of the model as trained (LoRA unmerged).
    atol : float
        Largest embedding difference the check accepts.

    Returns
    -------
    pathlib.Path
        The output folder.
    """
    hparams, text = load_run(run, hparams_file, overrides, threshold)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / HPARAMS_FILE).write_text(text, encoding="utf-8")
    torch.save(hparams["embedding_model"].state_dict(), out / WEIGHTS_FILE)
    del hparams  # the check holds two more copies of a 2.4 GB model
    logger.info("Exported %s to %s", run, out)
    if check:
        reference = _reference_model(run, hparams_file, overrides)
        exported = W2VBertSpeakerRecognition.from_hparams(source=str(out))
        wavs = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
        lens = torch.tensor([1.0, 0.6])
        with torch.no_grad():
            expected = reference(wavs, lens)
            got = exported.encode_batch(wavs, lens).cpu()
        error = float((got - expected).abs().max())
        if error > atol:
            raise ValueError(
                f"export check failed: the exported model's embeddings differ from the "
                f"trained model's by up to {error:.3g} (> {atol})"
            )
        logger.info("Export check passed: max embedding difference %.3g", error)
    return out
