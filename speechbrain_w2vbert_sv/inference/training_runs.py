"""A training run (its best checkpoint and yaml) as an inference model."""

import datetime
import pathlib

from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.ctc_tokens import CTCTokens
from speechbrain_w2vbert_sv.inference.model_yaml import (
    HPARAMS_FILE,
    INFERENCE_SETTINGS,
    LORA_SETTINGS,
    TRAINING_ONLY_PREFIXES,
    W2VBERT_DEFINITION,
    WEIGHTS_FILE,
    encoder_config,
    inference_hparams_text,
    model_section_settings,
    read_resolved_yaml,
)
from speechbrain_w2vbert_sv.inference.speechbrain_runs import (
    is_speechbrain_run,
    speechbrain_pipeline,
    speechbrain_run_settings,
    speechbrain_run_state,
)
from speechbrain_w2vbert_sv.training.checkpoints import (
    AtomicCheckpointer,
    best_checkpoint,
)
from speechbrain_w2vbert_sv.utils import load_checkpoint_file

logger = get_logger(__name__)


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
        raise ValueError(f"{save}: no checkpoint found{_started_from(run)}")
    return pathlib.Path(checkpoint.path)


def _started_from(run):
    """A hint for a run without checkpoints: the run it started from (e.g. a scoring run
    with --number_of_epochs=0 after prune.py), which holds the weights."""
    try:
        init_from = read_resolved_yaml(pathlib.Path(run) / HPARAMS_FILE).get("init_from")
    except (OSError, ValueError, AttributeError):
        return ""
    if not init_from:
        return ""
    return (
        f" (it saved none, e.g. trained with --number_of_epochs=0: its weights are those "
        f"of the folder it started from; export that one: --run {init_from})"
    )


def _load_weights(module, checkpoint, source, tree):
    """Strictly loads a state dict (a LoRA one merges into a plain backbone), less
    the training-only parts (the auxiliary CTC layer of a distilled student)."""
    if is_speechbrain_run(tree):
        state = speechbrain_run_state(tree, checkpoint.parent, module)
    else:
        state = load_checkpoint_file(checkpoint)
    expected = module.state_dict()
    state = {
        k: v for k, v in state.items() if k in expected or not k.startswith(TRAINING_ONLY_PREFIXES)
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
            raise ValueError(f"{hparams_file} not found: give the training yaml (--hparams)")
    return checkpoint, weights, hparams_file


def inference_definition(tree, hparams_file, keep_lora=False):
    """Definition, settings and extra top-level values of a run's inference model
    (``tree``: its parsed yaml, a SpeechBrain recipe's or this package's)."""
    if is_speechbrain_run(tree):
        definition, settings = speechbrain_run_settings(tree, hparams_file)
    else:
        definition, settings = model_section_settings(tree, hparams_file)
    extra = {}
    if definition == W2VBERT_DEFINITION:
        config = encoder_config(settings)
        lora = {k: settings[k] for k in LORA_SETTINGS if k in settings}
        settings.update(INFERENCE_SETTINGS, w2vbert_config=config)
        if keep_lora:
            settings.update(lora)
    elif definition == "speaker_adaptor.yaml":
        extra = _asr_outputs(tree.get("asr_folder"), hparams_file)
    return definition, settings, extra


def _asr_outputs(asr_folder, source):
    """The interface settings of an adaptor run: its ASR model's CTC tokens
    (``label_encoder.txt`` or a SentencePiece ``tokenizer.ckpt``)."""
    if asr_folder is None:
        raise ValueError(f"{source}: asr_folder is needed to export a speaker adaptor")
    try:
        tokens = CTCTokens.from_path(str(asr_folder))
    except ValueError as error:
        raise ValueError(
            f"{source}: {error} (needed to export a speaker adaptor: its CTC outputs are "
            "transcribed)"
        ) from None
    return {
        "interface": "speechbrain_w2vbert_sv.inference.interface.ASRSpeakerRecognition",
        **tokens.to_hparams(),
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
    tree = read_resolved_yaml(hparams_file, overrides)
    definition, settings, extra = inference_definition(tree, hparams_file)
    text = inference_hparams_text(settings, threshold, header, definition, extra)
    hparams = load_hyperpyyaml(text)
    _load_weights(hparams["embedding_model"], weights, hparams_file, tree)
    hparams["embedding_model"].eval()
    return hparams, text


def trained_model(run, hparams_file, overrides):
    """The run's model as trained, for the export check: ``(wavs, wav_lens) ->
    embeddings``; with LoRA adapters kept, and for a SpeechBrain recipe's run its own
    pipeline of slots (see :func:`speechbrain_pipeline`).

    Returns
    -------
    model : callable
        The model.
    exact_padding : bool
        Whether it takes padded batches exactly as the exported model does
        (SpeechBrain's slots read relative lengths at the frame rate: one frame off).
    """
    checkpoint, weights, hparams_file = _run_files(run, hparams_file)
    tree = read_resolved_yaml(hparams_file, overrides)
    if is_speechbrain_run(tree):
        return speechbrain_pipeline(tree, checkpoint), False
    definition, settings, extra = inference_definition(tree, hparams_file, keep_lora=True)
    text = inference_hparams_text(settings, definition=definition, extra=extra)
    model = load_hyperpyyaml(text)["embedding_model"]
    _load_weights(model, weights, hparams_file, tree)
    return model.eval(), True
