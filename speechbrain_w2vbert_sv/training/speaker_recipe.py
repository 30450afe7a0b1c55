"""The speaker training recipe (``recipes/VoxCeleb/train.py``) as a function, so that
scripts that run several trainings (``compare_conformer.py``) call it directly.
"""

import pathlib
import shutil

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.csv_io import path_to_id, read_csv, write_csv
from speechbrain_w2vbert_sv.data.pipeline import make_eval_dataset, make_train_dataset
from speechbrain_w2vbert_sv.data.recipe_data import (
    LABEL_ENCODER_FILE,
    prepare_augmentation_lists,
    prepare_recipe_data,
)
from speechbrain_w2vbert_sv.data.shard_pipeline import make_shard_train_loader
from speechbrain_w2vbert_sv.experiment import start_experiment
from speechbrain_w2vbert_sv.scoring.trials import read_trials
from speechbrain_w2vbert_sv.training.checkpoints import (
    init_from_checkpoint,
    is_exported_folder,
    run_save_folder,
)
from speechbrain_w2vbert_sv.training.speaker_brain import SpeakerBrain

logger = get_logger(__name__)

EVAL_COLUMNS = ("ID", "duration", "wav", "spk_id")


def train_speaker_model(argv):
    """Runs the speaker training recipe: ``train.py <hparams> [--overrides]``.

    Prepares the data of ``data_format`` and the augmentation lists (main process
    first), builds the label encoder (a later stage keeps its ``--init_from`` run's
    classes; an exported or imported model folder brings none, its classifier starts
    fresh), trains with the Brain the yaml names (``brain_class``, default
    :class:`~speechbrain_w2vbert_sv.training.speaker_brain.SpeakerBrain`), validating
    on the first trial list, and scores every trial list with the best checkpoint.

    Arguments
    ---------
    argv : list of str
        The command line: hyperparameter file, then SpeechBrain options and overrides.

    Returns
    -------
    SpeakerBrain
        The trained Brain; ``test_results`` holds each trial list's metrics.
    """
    hparams, run_opts = start_experiment(argv, distributed=True)
    save_folder = pathlib.Path(hparams["save_folder"])

    # Data and augmentation lists: prepared on the main process, then read by all.
    run_on_main(prepare_recipe_data, kwargs={"hparams": hparams})
    data = prepare_recipe_data(hparams)
    augment = None
    if hparams["make_augment"] is not None:
        run_on_main(prepare_augmentation_lists, kwargs={"hparams": hparams})
        lists = prepare_augmentation_lists(hparams)
        if lists:
            augment = hparams["make_augment"](**lists)
        else:
            logger.warning("Augmentation asked for but no noise or RIR folder given: none")

    # Labels: a later stage keeps the classes of the stage it starts from.
    label_file = save_folder / LABEL_ENCODER_FILE
    init_from = hparams["init_from"]
    # An exported model has no classifier (nor its classes): a fresh one is trained.
    from_classes = init_from is not None and not is_exported_folder(init_from)
    if from_classes and if_main_process() and not label_file.exists():
        previous = run_save_folder(init_from) / LABEL_ENCODER_FILE
        if previous.is_file():
            shutil.copyfile(previous, label_file)
        elif "classifier" in hparams["init_from_modules"]:
            raise ValueError(f"init_from: {previous} not found (needed with the classifier)")
    train_kwargs = {
        "crop_seconds": hparams["crop_seconds"],
        "speed_perturb": hparams["speed_perturb"],
        "sample_rate": hparams["sample_rate"],
        "label_encoder_file": label_file,
    }
    if hparams["data_format"] == "shards":
        make_train_data = make_shard_train_loader
        train_kwargs.update(
            shards=hparams.get("shards"),  # stage yamls and quickstart.yaml have the keys
            loader_options=hparams["train_dataloader_options"],
            shuffle_buffer=hparams.get("shuffle_buffer", 1000),
            seed=hparams["seed"],
            epoch_counter=hparams["epoch_counter"],
        )
    else:
        make_train_data = make_train_dataset
        train_kwargs["csv_file"] = data["train"]
    run_on_main(make_train_data, kwargs=train_kwargs)  # writes the label encoder once
    train_data, label_encoder, num_classes = make_train_data(**train_kwargs)
    if hparams["data_format"] == "shards":  # resumes mid-epoch to the nearest shard
        hparams["checkpointer"].add_recoverable("shard_position", train_data)

    # Trial lists; validation embeds the dev list's utterances (and a same-speaker dev
    # split, for a classification error), the test embeds every list's.
    if not data["trials"]:
        raise ValueError("--trials must name at least one trial list")
    maps = data.get("enrollment_maps", {})  # multi-utterance enrollment (CNC-Eval-Avg)
    trials = {name: read_trials(path, maps.get(name)) for name, path in data["trials"].items()}
    dev_name = next(iter(trials))
    dev_trials = trials[dev_name].sample_utterances(
        hparams["valid_max_utterances"], hparams["seed"]
    )
    test_rows = read_csv(data["test"])
    dev_rows = read_csv(data["dev"]) if data.get("dev") else []
    valid_csv = save_folder / "valid.csv"
    if if_main_process():
        valid_ids = {path_to_id(u) for u in dev_trials.files}
        valid_rows = [r for r in test_rows if r["ID"] in valid_ids] + dev_rows
        write_csv(valid_csv, [{c: r[c] for c in EVAL_COLUMNS} for r in valid_rows])
    sb.utils.distributed.ddp_barrier()
    valid_data = make_eval_dataset(valid_csv, sample_rate=hparams["sample_rate"])
    valid_data = valid_data.filtered_sorted(sort_key="duration")
    test_data = make_eval_dataset(data["test"], sample_rate=hparams["sample_rate"])
    test_data = test_data.filtered_sorted(sort_key="duration")
    dev_labels = {r["ID"]: label_encoder.encode_label(r["spk_id"]) for r in dev_rows}

    # Model: the classifier size comes from the data.
    classifier = hparams["make_classifier"](out_neurons=num_classes)
    modules = {"embedding_model": hparams["embedding_model"], "classifier": classifier}
    hparams["checkpointer"].add_recoverable("classifier", classifier)
    if init_from is not None:
        init_from_checkpoint(init_from, {k: modules[k] for k in hparams["init_from_modules"]})

    # A recipe may name a SpeakerBrain subclass (e.g. the distillation Brain).
    brain_class = hparams.get("brain_class", SpeakerBrain)
    brain = brain_class(
        modules=modules,
        hparams={**hparams, "augment": augment},
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        dev_trials=dev_trials,
        test_trials=trials,
        dev_labels=dev_labels,
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=hparams["train_dataloader_options"],
        valid_loader_kwargs=dict(hparams["eval_dataloader_options"]),
    )
    brain.evaluate(test_data, test_loader_kwargs=dict(hparams["eval_dataloader_options"]))
    return brain
