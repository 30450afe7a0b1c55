"""Initialisation of Conformer models from SpeechBrain ASR checkpoints.

:func:`load_asr_checkpoint` initialises a Conformer backbone (front end, CTC head) from
the files SpeechBrain's Conformer ASR recipes (``model.ckpt``) and pretrained ASR models
(``asr.ckpt``) write, plus their ``normalizer.ckpt``, and reports which keys were
loaded, missing, unexpected or ignored (the attention decoder and its output layer are
not part of the encoder).
"""

import dataclasses
import pathlib

from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.utils import load_checkpoint_file

logger = get_logger(__name__)

# Order of the `model` ModuleList that SpeechBrain's LibriSpeech Transformer/Conformer
# recipes checkpoint as model.ckpt: [CNN, Transformer, seq_lin, ctc_lin].
LIBRISPEECH_CHECKPOINT_MODULES = ("CNN", "Transformer", "seq_lin", "ctc_lin")
# Parts of a TransformerASR that belong to its attention decoder, not the encoder.
_DECODER_PREFIXES = ("decoder.", "custom_tgt_module.", "positional_encoding_decoder.")
_MODEL_FILES = ("model.ckpt", "asr.ckpt")
_NORMALIZER_FILE = "normalizer.ckpt"


@dataclasses.dataclass
class TransferReport:
    """What :func:`load_asr_checkpoint` did with each key.

    Attributes
    ----------
    loaded : dict
        Checkpoint key -> the key it was loaded into.
    missing : list
        Keys of the target modules that received nothing (they keep their values).
    unexpected : list
        Checkpoint keys of encoder parts the target does not have (e.g. blocks beyond
        its depth).
    ignored : list
        Checkpoint keys left out by design: the attention decoder, its output layer,
        the CTC layer when no CTC head is given.
    normalizer : bool
        Whether global normalisation statistics were loaded into the front end.
    """

    loaded: dict = dataclasses.field(default_factory=dict)
    missing: list = dataclasses.field(default_factory=list)
    unexpected: list = dataclasses.field(default_factory=list)
    ignored: list = dataclasses.field(default_factory=list)
    normalizer: bool = False

    def __str__(self):
        def head(keys):
            shown = ", ".join(list(keys)[:5])
            return shown + (", ..." if len(keys) > 5 else "")

        return (
            f"{len(self.loaded)} keys loaded; {len(self.missing)} missing [{head(self.missing)}]; "
            f"{len(self.unexpected)} unexpected [{head(self.unexpected)}]; "
            f"{len(self.ignored)} ignored (decoder/output layers); "
            f"global normalisation statistics {'loaded' if self.normalizer else 'not loaded'}"
        )


def _resolve_checkpoint(checkpoint):
    """Model state dict and normaliser file (or None) of a checkpoint argument."""
    if isinstance(checkpoint, dict):
        return checkpoint, None
    path = pathlib.Path(checkpoint)
    if path.is_dir():
        found = [path / name for name in _MODEL_FILES if (path / name).is_file()]
        if not found:
            raise ValueError(
                f"{path}: no {' or '.join(_MODEL_FILES)} in this folder (give a "
                "SpeechBrain checkpoint folder, e.g. save/CKPT+..., or a pretrained "
                "model folder)"
            )
        model_file, normalizer = found[0], path / _NORMALIZER_FILE
    elif path.is_file():
        model_file, normalizer = path, path.with_name(_NORMALIZER_FILE)
    else:
        raise ValueError(f"{path}: ASR checkpoint not found")
    # Tensors and plain containers only: a checkpoint from elsewhere must not run code.
    state = load_checkpoint_file(model_file)
    if not isinstance(state, dict):
        raise ValueError(f"{model_file}: not a state dict ({type(state).__name__})")
    return state, normalizer if normalizer.is_file() else None


def _split_key(key, checkpoint_modules):
    """(module name, rest) of a checkpoint key: ``1.encoder.x`` -> (Transformer, encoder.x).

    An index past ``checkpoint_modules`` gives the name None."""
    first, _, rest = key.partition(".")
    if first.isdigit():
        index = int(first)
        return (checkpoint_modules[index] if index < len(checkpoint_modules) else None), rest
    return first, rest


def _hparams_files(checkpoint):
    """Where SpeechBrain keeps the hyperparameters of a checkpoint: beside a pretrained
    model's file, or in the output folder of a recipe's ``save/CKPT+...``."""
    if isinstance(checkpoint, dict):
        return []
    path = pathlib.Path(checkpoint)
    folder = path if path.is_dir() else path.parent
    if (folder / "CKPT.yaml").is_file():  # <output>/save/CKPT+...
        return [folder.parent.parent / "hyperparams.yaml"]
    return [folder / "hyperparams.yaml"]


def checkpoint_module_order(checkpoint, num_modules):
    """The names of a checkpoint's ``ModuleList`` entries, read from its hyperparameters.

    SpeechBrain's recipes write their ``hyperparams.yaml`` into the output folder
    (``model: !new:torch.nn.ModuleList [[*CNN, *Transformer, *seq_lin, *ctc_lin]]``,
    references resolved into aliases) and pretrained folders carry one
    (``asr_model: !new:torch.nn.ModuleList [[!ref <CNN>, ...]]``). The file is parsed,
    nothing in it is built. The list of ``num_modules`` entries is taken when exactly
    one such list is found.

    Arguments
    ---------
    checkpoint : str, os.PathLike or dict
        As for :func:`load_asr_checkpoint` (a state dict has no hyperparameters).
    num_modules : int
        Number of entries of the checkpoint's ``ModuleList``.

    Returns
    -------
    names : tuple of str or None
        The names in order, or None when they cannot be known.
    file : pathlib.Path or None
        The ``hyperparams.yaml`` they were read from.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> _ = (folder / "hyperparams.yaml").write_text(
    ...     "CNN: !new:torch.nn.Identity\\nctc_lin: !new:torch.nn.Identity\\n"
    ...     "asr_model: !new:torch.nn.ModuleList [[!ref <CNN>, !ref <ctc_lin>]]\\n")
    >>> names, file = checkpoint_module_order(folder, 2)
    >>> names, file.name
    (('CNN', 'ctc_lin'), 'hyperparams.yaml')
    """
    import ruamel.yaml

    for file in _hparams_files(checkpoint):
        if not file.is_file():
            continue
        try:
            tree = ruamel.yaml.YAML().load(file.read_text(encoding="utf-8"))
        except Exception:  # any YAML problem: the order is just not known
            continue
        if not isinstance(tree, dict):
            continue
        found = set()
        for node in tree.values():
            tag = getattr(getattr(node, "tag", None), "value", None)
            if tag != "!new:torch.nn.ModuleList" or not isinstance(node, list):
                continue
            entries = node[0] if len(node) == 1 and isinstance(node[0], list) else node
            names = tuple(_entry_name(tree, entry) for entry in entries)
            if len(names) == num_modules and None not in names:
                found.add(names)
        if len(found) == 1:
            return found.pop(), file
    return None, None


def _entry_name(tree, entry):
    """Top-level name of a ModuleList entry: ``!ref <name>`` or an alias of ``name``."""
    if getattr(getattr(entry, "tag", None), "value", None) == "!ref":
        ref = str(entry.value).strip()
        if ref.startswith("<") and ref.endswith(">") and ref[1:-1] in tree:
            return ref[1:-1]
        return None
    return next((key for key, value in tree.items() if value is entry), None)


def _module_order(checkpoint, state, checkpoint_modules):
    """The ModuleList order to load with: the checkpoint's own (its hyperparams.yaml)
    when ``checkpoint_modules`` is None, else ``checkpoint_modules``, refused when
    that file orders the list otherwise."""
    indices = {int(k.partition(".")[0]) for k in state if k.partition(".")[0].isdigit()}
    known = file = None
    if indices:
        known, file = checkpoint_module_order(checkpoint, max(indices) + 1)
    if checkpoint_modules is None:
        if known is not None:
            logger.info("ModuleList [%s] of %s read from %s", ", ".join(known), checkpoint, file)
        return known or LIBRISPEECH_CHECKPOINT_MODULES
    if known is not None and tuple(checkpoint_modules) != known:
        # seq_lin and ctc_lin have the same shape: a swap would load without a shape error.
        raise ValueError(
            f"ASR checkpoint {checkpoint}: {file} orders its ModuleList "
            f"[{', '.join(known)}] but checkpoint_modules is "
            f"[{', '.join(checkpoint_modules)}]: set asr_checkpoint_modules "
            f"(checkpoint_modules) to [{', '.join(known)}] or leave it out (null) to "
            "read it from that file"
        )
    return checkpoint_modules


def _check_ctc_outputs(checkpoint, report, state, strict):
    """Compares the CTC layer loaded from a checkpoint with the checkpoint's own
    token inventory (``label_encoder.txt`` or ``tokenizer.ckpt`` beside it)."""
    from speechbrain_w2vbert_sv.data.ctc_tokens import CTCTokens, find_token_file

    weights = [
        key
        for key, target in report.loaded.items()
        if target.startswith("ctc_head.") and state[key].dim() == 2
    ]
    if not weights or isinstance(checkpoint, dict):
        return
    path = pathlib.Path(checkpoint)
    try:
        token_file = find_token_file(path if path.is_dir() else path.parent)
    except ValueError:
        return  # nothing to compare with
    outputs = state[weights[0]].shape[0]
    count = len(CTCTokens.from_path(token_file))
    if outputs != count:
        message = (
            f"ASR checkpoint {checkpoint}: the layer loaded as the CTC layer "
            f"({weights[0]}) has {outputs} outputs but {token_file} has {count} tokens: "
            "checkpoint_modules probably names the wrong entry as ctc_lin"
        )
        if strict:
            raise ValueError(message)
        logger.warning(message)


def load_asr_checkpoint(
    checkpoint,
    backbone=None,
    frontend=None,
    ctc_head=None,
    model=None,
    checkpoint_modules=None,
    normalizer=None,
    strict=False,
):
    """Initialise a Conformer backbone (front end, CTC head) from a SpeechBrain ASR checkpoint.

    Key mapping (``checkpoint_modules`` names the entries of the checkpointed
    ``ModuleList`` in order, by default those of the checkpoint's own
    ``hyperparams.yaml`` (:func:`checkpoint_module_order`), else LibriSpeech's
    ``[CNN, Transformer, seq_lin, ctc_lin]``; keys that already start with a name, as
    in a ``ModuleDict``, are read as they are):

    * ``CNN.*`` -> ``backbone.CNN.*``;
    * ``Transformer.{custom_src_module, encoder, positional_encoding}.*`` ->
      ``backbone.Transformer.*`` (input projection, Conformer blocks, final norm,
      relative positions);
    * ``Transformer.{decoder, custom_tgt_module, positional_encoding_decoder}.*``:
      ignored (attention decoder);
    * ``ctc_lin.*`` -> ``ctc_head.*`` (ignored without a head); anything else
      (``seq_lin``, ...): ignored;
    * ``normalizer.ckpt`` (global statistics) -> ``frontend``
      (:meth:`ConformerFbank.load_normalizer`).

    Arguments
    ---------
    checkpoint : str, os.PathLike or dict
        ``model.ckpt``/``asr.ckpt`` file, a folder holding one (a ``CKPT+...`` folder
        of a recipe or a pretrained model folder; its ``normalizer.ckpt`` is used
        too), or a state dict.
    backbone : ConformerBackbone, optional
        Receives the encoder weights.
    frontend : ConformerFbank, optional
        Receives the normalisation statistics.
    ctc_head : torch.nn.Module, optional
        Receives the CTC output layer (SpeechBrain ``Linear``).
    model : torch.nn.Module, optional
        Instead of the three above: a model whose ``backbone``, ``frontend`` and
        ``ctc_lin`` attributes receive them (``ConformerCTC``,
        ``MultiTaskSpeakerModel``); handy in HyperPyYAML (``!apply:``).
    checkpoint_modules : sequence of str, optional
        Names of the ModuleList entries of the checkpoint, in order (default: read
        from the checkpoint's ``hyperparams.yaml``, else
        :data:`LIBRISPEECH_CHECKPOINT_MODULES`). An order that contradicts that file
        is refused, strict or not: ``seq_lin`` and ``ctc_lin`` have the same shape,
        so a swap would load the decoder's output layer as the CTC layer.
    normalizer : str, os.PathLike or dict, optional
        Normaliser checkpoint, if not next to the model file.
    strict : bool
        Raise a ValueError when keys are missing or unexpected, when a ``ModuleList``
        index is past ``checkpoint_modules``, or when the layer loaded as the CTC layer
        has another number of outputs than the ``label_encoder.txt`` or
        ``tokenizer.ckpt`` beside the checkpoint. Without it these are warnings.

    Returns
    -------
    TransferReport
        Loaded, missing, unexpected and ignored keys (also logged).

    Raises
    ------
    ValueError
        A checkpoint tensor whose shape differs from its target (the message names the
        key and both shapes), an unreadable checkpoint or one holding more than
        tensors and plain containers (it is not unpickled), ``checkpoint_modules``
        that contradict the checkpoint's ``hyperparams.yaml``, or (``strict``)
        missing or unexpected keys.

    Example
    -------
    >>> from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
    >>> backbone = ConformerBackbone(n_mels=40, cnn_channels=(8, 8), d_model=32,
    ...                              nhead=4, num_layers=2, d_ffn=64, kernel_size=7)
    >>> ckpt = {"0." + k: v for k, v in backbone.CNN.state_dict().items()}
    >>> ckpt.update({"1." + k: v for k, v in backbone.Transformer.state_dict().items()})
    >>> report = load_asr_checkpoint(ckpt, backbone)
    >>> len(report.loaded) == len(ckpt), report.missing, report.unexpected
    (True, [], [])
    """
    if model is not None:
        backbone = model.backbone
        frontend = getattr(model, "frontend", frontend)
        ctc_head = getattr(model, "ctc_lin", ctc_head)
    if backbone is None:
        raise ValueError("load_asr_checkpoint needs a `backbone` (or a `model` with one)")
    state, normalizer_file = _resolve_checkpoint(checkpoint)
    targets = {"CNN": backbone.CNN, "Transformer": backbone.Transformer}
    prefixes = {"CNN": "backbone.CNN.", "Transformer": "backbone.Transformer."}
    if ctc_head is not None:
        targets["ctc_lin"], prefixes["ctc_lin"] = ctc_head, "ctc_head."
    new_states = {name: module.state_dict() for name, module in targets.items()}
    report = TransferReport()
    filled = {name: set() for name in targets}
    checkpoint_modules = _module_order(checkpoint, state, checkpoint_modules)
    for key, value in state.items():
        name, rest = _split_key(key, checkpoint_modules)
        if name is None:
            message = (
                f"ASR checkpoint key {key!r} is entry {key.partition('.')[0]} of the "
                f"checkpoint's ModuleList, but checkpoint_modules names only "
                f"{len(checkpoint_modules)} entries [{', '.join(checkpoint_modules)}] "
                "(SpeechBrain's LibriSpeech recipes checkpoint [CNN, Transformer, seq_lin, "
                "ctc_lin]): set asr_checkpoint_modules (checkpoint_modules) to the "
                "checkpoint's order"
            )
            if strict:
                raise ValueError(message)
            logger.warning(message)
            report.ignored.append(key)
            continue
        if name == "Transformer" and rest.startswith(_DECODER_PREFIXES):
            report.ignored.append(key)
            continue
        if name not in targets:
            report.ignored.append(key)
            continue
        target = new_states[name]
        if rest not in target:
            report.unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(target[rest].shape):
            raise ValueError(
                f"ASR checkpoint key {key!r} has shape {tuple(value.shape)} but its target "
                f"{prefixes[name]}{rest} has shape {tuple(target[rest].shape)}: build the "
                "backbone with the ASR model's hyperparameters (n_mels, cnn_channels, "
                "d_model, d_ffn, kernel_size, ...)"
            )
        target[rest] = value
        filled[name].add(rest)
        report.loaded[key] = prefixes[name] + rest
    for name, module in targets.items():
        module.load_state_dict(new_states[name])
        report.missing.extend(prefixes[name] + k for k in new_states[name] if k not in filled[name])

    _check_ctc_outputs(checkpoint, report, state, strict)
    normalizer = normalizer if normalizer is not None else normalizer_file
    if frontend is not None and normalizer is not None:
        report.normalizer = frontend.load_normalizer(normalizer)
    logger.info("ASR checkpoint transfer: %s", report)
    if report.missing or report.unexpected:
        logger.warning(
            "ASR checkpoint transfer: missing %s, unexpected %s",
            report.missing,
            report.unexpected,
        )
        if strict:
            raise ValueError(f"ASR checkpoint does not fit the model (strict): {report}")
    return report
