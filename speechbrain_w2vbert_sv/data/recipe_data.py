"""The data a training recipe's hyperparameters name: corpus CSVs, trial lists and
augmentation lists, prepared once and found again by every later run or process.

``train.py`` and ``prune.py`` call these on the main process (``run_on_main``) and
then on every process to read the prepared paths.
"""

import pathlib

from speechbrain_w2vbert_sv.data.augmentation import (
    prepare_noise_csv,
    prepare_rir_csv,
    synthesize_rirs,
)
from speechbrain_w2vbert_sv.data.cnceleb import prepare_cnceleb
from speechbrain_w2vbert_sv.data.csv_io import read_csv
from speechbrain_w2vbert_sv.data.generic import prepare_folder_corpus
from speechbrain_w2vbert_sv.data.synthetic import make_synthetic_corpus
from speechbrain_w2vbert_sv.data.voxblink2 import prepare_voxceleb_voxblink2
from speechbrain_w2vbert_sv.data.voxceleb import place_trial_lists, prepare_voxceleb
from speechbrain_w2vbert_sv.scoring.trials import read_trials

# The speaker label encoder of a training run, in its save folder.
LABEL_ENCODER_FILE = "label_encoder.txt"


def _resolve(path, root):
    """A path as given if absolute, else under ``root``."""
    path = pathlib.Path(path)
    return path if path.is_absolute() or root is None else pathlib.Path(root) / path


def prepare_recipe_data(hparams):
    """Prepares the corpus of ``data_format`` (does nothing when already prepared).

    Arguments
    ---------
    hparams : dict
        A training recipe's hyperparameters: ``data_format`` (``voxceleb``,
        ``folder``, ``synthetic``, ``voxceleb_voxblink2`` or ``cnceleb``),
        ``save_folder``, ``data_folder``, ``trials``, ``trials_folder``,
        ``dev_ratio``, ``sample_rate``, ``prep_workers``, ``prep_read_samples``,
        ``speaker_regex``, ``synthetic_corpus``, ``voxblink2_folder``; ``shards``
        prepares the test data as ``eval_data_format`` (training reads the shards).

    Returns
    -------
    dict
        ``train``, ``test`` and optionally ``dev`` CSV paths, and ``trials``:
        trial list name -> path (paths inside relative to the corpus root, which is
        where the CSV IDs come from); ``cnceleb`` adds ``enrollment_maps``: trial
        list name -> its map of multi-utterance enrollment models.
    """
    fmt = hparams["data_format"]
    if fmt == "shards":  # training reads the shards (shard_pipeline); the test data:
        eval_format = hparams.get("eval_data_format")
        if eval_format in (None, "shards"):
            raise ValueError("data_format shards needs --eval_data_format (voxceleb, folder, ...)")
        data = prepare_recipe_data({**hparams, "data_format": eval_format, "dev_ratio": 0.0})
        return {k: v for k, v in data.items() if k not in ("train", "dev")}
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
    if fmt == "voxceleb_voxblink2":  # one training set, speaker labels prefixed by corpus
        if not hparams.get("voxblink2_folder"):
            raise ValueError("data_format voxceleb_voxblink2 needs --voxblink2_folder")
        lists = place_trial_lists(hparams["trials_folder"], save / "trials", hparams["trials"])
        csvs = prepare_voxceleb_voxblink2(
            hparams["data_folder"],
            hparams["voxblink2_folder"],
            save,
            verification_list=list(lists.values()),
            num_workers=hparams["prep_workers"],
            read_samples=hparams["prep_read_samples"],
            **common,
        )
        return {**csvs, "trials": lists}
    if fmt == "cnceleb":  # data_folder: [CN-Celeb_flac] or [CN-Celeb_flac, CN-Celeb2_flac]
        folders = hparams["data_folder"]
        folders = folders if isinstance(folders, (list, tuple)) else [folders]
        return prepare_cnceleb(
            folders[0],
            save,
            cnceleb2_folder=folders[1] if len(folders) > 1 else None,
            splits=("train", "dev", "test") if hparams["dev_ratio"] > 0 else ("train", "test"),
            trials=hparams["trials"],
            num_workers=hparams["prep_workers"],
            read_samples=hparams["prep_read_samples"],
            **common,
        )
    raise ValueError(
        "data_format must be voxceleb, folder, synthetic, voxceleb_voxblink2 or cnceleb, "
        f"got {fmt!r}"
    )


def prepare_augmentation_lists(hparams):
    """Noise, babble and RIR lists for the augmentation, each made once (delete a list
    to make it again).

    Arguments
    ---------
    hparams : dict
        A training recipe's hyperparameters: ``save_folder``, ``noise_folders``,
        ``babble_folders``, ``rir_folders``, ``synthetic_rirs``, ``sample_rate``,
        ``prep_workers``.

    Returns
    -------
    dict
        The keyword arguments of the recipe's ``make_augment`` (``noise_csv``,
        ``babble_csv``, ``rir_csv``) for the lists there are.
    """
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
