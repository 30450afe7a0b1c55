#!/usr/bin/env python3
"""Recipe: train a speaker embedding model (w2v-BERT 2.0 + MFA head, or any other
SpeakerEmbeddingModel) with AAM softmax, validated by EER on a trial list.

To run it::

    python recipes/VoxCeleb/train.py recipes/VoxCeleb/hparams/quickstart.yaml
    python recipes/VoxCeleb/train.py recipes/VoxCeleb/hparams/stage1.yaml \\
        --data_folder=/data/voxceleb2_wav --trials_folder=/data/vox1_meta
    torchrun --nproc_per_node=8 recipes/VoxCeleb/train.py \\
        recipes/VoxCeleb/hparams/stage2.yaml ... --init_from=results/stage1/1986

``data_format`` chooses the data: ``voxceleb`` (VoxCeleb1/2 folders and official
trial lists), ``folder`` (any corpus whose speaker is found in the file path by
``speaker_regex``, with a trial list whose speakers are kept out of training) or
``synthetic`` (a generated corpus: no data needed). The first trial list of
``trials`` validates every epoch (its EER selects the best checkpoint); every list
is scored with the best checkpoint at the end. ``--init_from=<previous output
folder>`` starts from the best checkpoint of a previous stage (see README.md).
"""

import logging
import pathlib
import shutil
import sys

try:
    import speechbrain_w2vbert_sv  # noqa: F401
except ImportError:  # run from a source checkout without installation
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from speechbrain_w2vbert_sv.training.speaker_brain import SpeakerBrain
from speechbrain_w2vbert_sv.training.checkpoints import init_from_checkpoint, run_save_folder
from speechbrain_w2vbert_sv.data.augmentation import (
    prepare_noise_csv,
    prepare_rir_csv,
    synthesize_rirs,
)
from speechbrain_w2vbert_sv.data.csv_io import path_to_id, read_csv, write_csv
from speechbrain_w2vbert_sv.data.generic import prepare_folder_corpus
from speechbrain_w2vbert_sv.data.pipeline import make_eval_dataset, make_train_dataset
from speechbrain_w2vbert_sv.data.synthetic import make_synthetic_corpus
from speechbrain_w2vbert_sv.data.voxceleb import place_trial_lists, prepare_voxceleb
from speechbrain_w2vbert_sv.scoring.trials import read_trials

logger = logging.getLogger(__name__)

LABEL_ENCODER = "label_encoder.txt"
EVAL_COLUMNS = ("ID", "duration", "wav", "spk_id")


def _resolve(path, root):
    """A path as given if absolute, else under ``root``."""
    path = pathlib.Path(path)
    return path if path.is_absolute() or root is None else pathlib.Path(root) / path


def prepare_data(hparams):
    """Prepares the corpus of ``data_format`` (does nothing when already prepared).

    Returns
    -------
    dict
        ``train``, ``test`` and optionally ``dev`` CSV paths, and ``trials``:
        trial list name -> path (paths inside relative to the corpus root, which is
        where the CSV IDs come from).
    """
    fmt = hparams["data_format"]
    save = pathlib.Path(hparams["save_folder"]) / "data"
    common = {"dev_ratio": hparams["dev_ratio"], "sample_rate": hparams["sample_rate"]}
    if fmt == "synthetic":
        corpus = make_synthetic_corpus(save, **hparams["synthetic_corpus"], **common)
        return {**corpus, "trials": {"synthetic_trials.txt": corpus["trials"]}}
    if hparams["data_folder"] is None:
        raise ValueError(f"data_format {fmt} needs --data_folder")
    if fmt == "voxceleb":
        lists = place_trial_lists(hparams["trials_folder"], save / "trials", hparams["trials"])
        csvs = prepare_voxceleb(
            hparams["data_folder"],
            save,
            splits=("train", "dev", "test") if hparams["dev_ratio"] > 0 else ("train", "test"),
            verification_list=list(lists.values()),
            num_workers=hparams["prep_workers"],
            read_samples=hparams["prep_read_samples"],
            **common,
        )
        return {**csvs, "trials": lists}
    if fmt == "folder":
        lists = {}
        for name in hparams["trials"]:
            path = _resolve(name, hparams["data_folder"])
            if not path.is_file():
                raise ValueError(f"trial list {path} not found")
            lists[path.name] = path
        test_files = list(dict.fromkeys(f for t in lists.values() for f in read_trials(t).files))
        options = {
            "speaker_regex": hparams["speaker_regex"],
            "num_workers": hparams["prep_workers"],
            "read_samples": hparams["prep_read_samples"],
            "sample_rate": hparams["sample_rate"],
        }
        # The trial files first, in their own folder: their speakers stay out of training.
        test = prepare_folder_corpus(
            hparams["data_folder"], save / "trial_files", file_lists={"test": test_files}, **options
        )["test"]
        test_speakers = {row["spk_id"] for row in read_csv(test)}
        csvs = prepare_folder_corpus(
            hparams["data_folder"],
            save,
            exclude_speakers=test_speakers,
            dev_ratio=hparams["dev_ratio"],
            **options,
        )
        return {**csvs, "test": test, "trials": lists}
    raise ValueError(f"data_format must be voxceleb, folder or synthetic, got {fmt!r}")


def prepare_augmentation(hparams):
    """Noise, babble and RIR lists for the augmentation, each made once (delete a list
    to make it again); returns the keyword arguments of ``make_augment``."""
    save = pathlib.Path(hparams["save_folder"]) / "augmentation"
    rir_folders = list(hparams["rir_folders"] or [])
    if hparams["synthetic_rirs"]:
        synthetic = save / "synthetic_rirs"
        if not synthetic.is_dir():
            synthesize_rirs(synthetic, sample_rate=hparams["sample_rate"])
        rir_folders.append(synthetic)
    wanted = {
        "noise_csv": (hparams["noise_folders"], prepare_noise_csv, "noise"),
        "babble_csv": (hparams["babble_folders"], prepare_noise_csv, "babble"),
        "rir_csv": (rir_folders, prepare_rir_csv, "rir"),
    }
    lists = {}
    for key, (folders, prepare, name) in wanted.items():
        if folders:
            csv_file = save / f"{name}.csv"
            if not csv_file.is_file():
                prepare(folders, save, name=name, num_workers=hparams["prep_workers"])
            lists[key] = csv_file
    return lists


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    save_folder = pathlib.Path(hparams["save_folder"])

    # Data and augmentation lists: prepared on the main process, then read by all.
    run_on_main(prepare_data, kwargs={"hparams": hparams})
    data = prepare_data(hparams)
    augment = None
    if hparams["make_augment"] is not None:
        run_on_main(prepare_augmentation, kwargs={"hparams": hparams})
        lists = prepare_augmentation(hparams)
        if lists:
            augment = hparams["make_augment"](**lists)
        else:
            logger.warning("Augmentation asked for but no noise or RIR folder given: none")

    # Labels: a later stage keeps the classes of the stage it starts from.
    label_file = save_folder / LABEL_ENCODER
    init_from = hparams["init_from"]
    if init_from is not None and if_main_process() and not label_file.exists():
        previous = run_save_folder(init_from) / LABEL_ENCODER
        if previous.is_file():
            shutil.copyfile(previous, label_file)
        elif "classifier" in hparams["init_from_modules"]:
            raise ValueError(f"init_from: {previous} not found (needed with the classifier)")
    train_kwargs = {
        "csv_file": data["train"],
        "crop_seconds": hparams["crop_seconds"],
        "speed_perturb": hparams["speed_perturb"],
        "sample_rate": hparams["sample_rate"],
        "label_encoder_file": label_file,
    }
    run_on_main(make_train_dataset, kwargs=train_kwargs)  # writes the label encoder once
    train_data, label_encoder, num_classes = make_train_dataset(**train_kwargs)

    # Trial lists; validation embeds the dev list's utterances (and a same-speaker dev
    # split, for a classification error), the test embeds every list's.
    if not data["trials"]:
        raise ValueError("--trials must name at least one trial list")
    trials = {name: read_trials(path) for name, path in data["trials"].items()}
    dev_name = next(iter(trials))
    dev_trials = trials[dev_name].sample_utterances(
        hparams["valid_max_utterances"], hparams["seed"]
    )
    test_rows = read_csv(data["test"])
    dev_rows = read_csv(data["dev"]) if data.get("dev") else []
    valid_csv = save_folder / "valid.csv"
    if if_main_process():
        valid_ids = {path_to_id(u) for u in dev_trials.utterances}
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


if __name__ == "__main__":
    main(sys.argv[1:])
