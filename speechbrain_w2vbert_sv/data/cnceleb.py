"""CN-Celeb1/2 preparation: training CSVs and the ``CNC-Eval`` trial lists.

Layouts of the flac releases (``cn-celeb_v2.tar.gz``, ``cn-celeb2_v2.tar.gz`` of
openslr.org/82), as WeSpeaker's ``examples/cnceleb/v2/local/prepare_data.sh`` and
Kaldi's ``egs/cnceleb`` read them:

* CN-Celeb1, ``CN-Celeb_flac/``: ``data/<spk>/<genre>-<session>-<utt>.flac`` for all
  1,000 speakers (``id00000`` to ``id00999``); ``dev/dev.lst``, the 800 training
  speakers; ``eval/enroll/<spk>-enroll.flac`` (one concatenated enrollment file per
  evaluation speaker) and ``eval/test/<spk>-<genre>-<session>-<utt>.flac``;
  ``eval/lists/enroll.lst`` (``<model> enroll/<model>.wav``), ``eval/lists/enroll.map``
  (``<model> <spk>/<file>.wav ...``: the utterances under ``data/`` the enrollment file
  was made of), ``eval/lists/test.lst`` and ``eval/lists/trials.lst`` (``<model>
  test/<file>.wav <0|1>``). The lists name ``.wav`` files, from the first (wav)
  release; files are therefore matched by their path without its ending.
* CN-Celeb2, ``CN-Celeb2_flac/``: ``data/<spk>/<genre>-<session>-<utt>.flac`` and
  ``spk.lst``, its speakers, all for training.

Two trial lists are written in the VoxCeleb format, paths relative to the CN-Celeb1 root
(the ``data_folder`` of ``verify.py`` and ``w2vbert-sv score``):

* ``CNC-Eval-Avg.txt`` with ``CNC-Eval-Avg.enroll.map``: the enroll side is the model
  (``id00800-enroll``), the mean embedding of its ``enroll.map`` utterances
  (:func:`~speechbrain_w2vbert_sv.scoring.cosine.trial_matrix`), as WeSpeaker's
  ``CNC-Eval-Avg.lst``;
* ``CNC-Eval-Concat.txt``: the enroll side is the concatenated ``eval/enroll`` file.

Training speakers keep their corpus IDs (CN-Celeb2's do not overlap CN-Celeb1's; a
preparation that finds shared IDs stops).

Example
-------
>>> sorted(CNCELEB_TRIAL_LISTS)
['CNC-Eval-Avg', 'CNC-Eval-Concat']
"""

import os
import pathlib

from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.csv_io import path_to_id, read_file_list
from speechbrain_w2vbert_sv.data.file_checks import DEFAULT_MIN_DURATION
from speechbrain_w2vbert_sv.data.generic import find_audio_files
from speechbrain_w2vbert_sv.data.preparation import (
    preparation_done,
    prepare_entries,
    save_preparation_options,
)
from speechbrain_w2vbert_sv.scoring.trials import read_enrollment_map

logger = get_logger(__name__)

CNCELEB_EXTENSIONS = (".flac", ".wav")
# Trial list name -> its enrollment map (None: single-utterance enrollment).
CNCELEB_TRIAL_LISTS = {
    "CNC-Eval-Avg": "CNC-Eval-Avg.enroll.map",
    "CNC-Eval-Concat": None,
}


def _read_columns(path, count):
    """Lines of a CN-Celeb list split into ``count`` fields (ValueError naming the line)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != count:
                raise ValueError(f"{path}, line {number}: expected {count} fields, got {line!r}")
            rows.append(fields)
    return rows


def _cnceleb2_speakers(root):
    """CN-Celeb2's speakers: those of ``spk.lst``, else every ``data/`` folder."""
    if (root / "spk.lst").is_file():
        return read_file_list(root / "spk.lst")
    if not (root / "data").is_dir():
        raise ValueError(f"CN-Celeb2 folder {root} has no data/ folder")
    return sorted(p.name for p in (root / "data").iterdir() if p.is_dir())


def _train_entries(root, speakers, corpus):
    """Entries of every audio file of the given speakers under ``root/data``."""
    entries = []
    for spk in speakers:
        folder = root / "data" / spk
        if not folder.is_dir():
            logger.warning("%s: speaker %s has no folder %s", corpus, spk, folder)
            continue
        for rel in find_audio_files(folder, CNCELEB_EXTENSIONS):
            entries.append({"path": str(folder / rel), "rel": f"data/{spk}/{rel}", "spk_id": spk})
    return entries


def _eval_speaker(rel):
    """Speaker of a CN-Celeb1 file: ``data/<spk>/...`` or ``eval/*/<spk>-...``."""
    parts = rel.split("/")
    return parts[1] if parts[0] == "data" else parts[-1].split("-")[0]


def _write_lines(path, lines):
    """Writes text lines atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def _check_list_names(names):
    unknown = set(names) - set(CNCELEB_TRIAL_LISTS)
    if unknown or not names:
        raise ValueError(
            f"CN-Celeb trial lists {sorted(unknown) or '[]'} unknown: use some of "
            f"{sorted(CNCELEB_TRIAL_LISTS)}"
        )


def write_cnceleb_trials(cnceleb1_folder, save_folder, names=tuple(CNCELEB_TRIAL_LISTS)):
    """Writes the ``CNC-Eval`` trial lists (and enrollment map) in the VoxCeleb format.

    Arguments
    ---------
    cnceleb1_folder : str or os.PathLike
        ``CN-Celeb_flac`` (with ``data/``, ``eval/`` and ``eval/lists/``).
    save_folder : str or os.PathLike
        Where ``<name>.txt`` (and ``CNC-Eval-Avg.enroll.map``) go.
    names : tuple of str
        Lists wanted, among ``CNCELEB_TRIAL_LISTS``.

    Returns
    -------
    trials : dict
        ``<name>.txt`` -> path of each list.
    maps : dict
        ``<name>.txt`` -> path of its enrollment map (multi-utterance lists only).
    missing : dict
        Absolute path -> reason, for listed files not found (paths with the
        listed ending), to report with the unusable files.
    files : list of str
        Every file the lists use, relative to ``cnceleb1_folder``.
    """
    _check_list_names(names)
    root = pathlib.Path(cnceleb1_folder).resolve()
    lists = root / "eval" / "lists"
    needed = ["trials.lst"] + [
        "enroll.map" if CNCELEB_TRIAL_LISTS[n] else "enroll.lst" for n in names
    ]
    for list_name in dict.fromkeys(needed):
        if not (lists / list_name).is_file():
            raise ValueError(f"CN-Celeb1 list {lists / list_name} not found")
    on_disk = {}
    for top in ("data", "eval"):
        for rel in find_audio_files(root / top, CNCELEB_EXTENSIONS):
            on_disk[path_to_id(f"{top}/{rel}")] = f"{top}/{rel}"
    missing, used = {}, {}

    def resolve(rel, source):
        found = on_disk.get(path_to_id(rel))
        if found is None:
            missing.setdefault(str(root / rel), f"missing file (used by {source})")
            found = rel
        used[found] = None
        return found

    trials = _read_columns(lists / "trials.lst", 3)
    tests = {test: resolve(f"eval/{test}", lists / "trials.lst") for _, test, _ in trials}
    save_folder = pathlib.Path(save_folder)
    save_folder.mkdir(parents=True, exist_ok=True)
    written, maps = {}, {}
    for name in names:
        if CNCELEB_TRIAL_LISTS[name] is None:
            concat = dict(_read_columns(lists / "enroll.lst", 2))
            enroll = {m: resolve(f"eval/{p}", lists / "enroll.lst") for m, p in concat.items()}
        else:
            models = read_enrollment_map(lists / "enroll.map")
            maps[f"{name}.txt"] = save_folder / CNCELEB_TRIAL_LISTS[name]
            _write_lines(
                maps[f"{name}.txt"],
                [
                    " ".join([m] + [resolve(f"data/{u}", lists / "enroll.map") for u in utts])
                    for m, utts in models.items()
                ],
            )
            enroll = {m: m for m in models}
        missing_models = sorted({m for m, _, _ in trials} - set(enroll))
        if missing_models:
            raise ValueError(f"{lists}: models {missing_models[:3]} of trials.lst not enrolled")
        written[f"{name}.txt"] = save_folder / f"{name}.txt"
        _write_lines(
            written[f"{name}.txt"],
            [f"{label} {enroll[m]} {tests[test]}" for m, test, label in trials],
        )
    return written, maps, missing, list(used)


def prepare_cnceleb(
    cnceleb1_folder,
    save_folder,
    cnceleb2_folder=None,
    splits=("train", "test"),
    trials=tuple(CNCELEB_TRIAL_LISTS),
    dev_ratio=0.0,
    seed=1234,
    min_duration=DEFAULT_MIN_DURATION,
    sample_rate=16000,
    read_samples=True,
    num_workers=0,
    skip_prep=False,
):
    """Prepares CN-Celeb: ``train`` (CN-Celeb1 dev + CN-Celeb2), ``dev``, ``test`` + lists.

    Writes ``{split}.csv`` (``ID,duration,wav,spk_id,sample_rate,channels``; IDs from
    the path relative to each corpus root, e.g. ``data--id00000--singing-01-001``),
    ``skipped.txt``, the ``CNC-Eval`` trial lists (see the module docstring) and
    ``cnceleb_options.json`` (a later call with the same options does nothing).

    Arguments
    ---------
    cnceleb1_folder : str or os.PathLike
        ``CN-Celeb_flac``.
    save_folder : str or os.PathLike
        Output folder.
    cnceleb2_folder : str or os.PathLike, optional
        ``CN-Celeb2_flac``: its speakers (``spk.lst``, else every ``data/``
        folder) join the training set.
    splits : tuple of str
        Among ``train`` (the speakers of ``dev/dev.lst``, and CN-Celeb2's),
        ``dev`` (``dev_ratio`` of each training speaker's utterances) and
        ``test`` (every file of the trial lists, which are written with it).
    trials : tuple of str
        Trial lists written with ``test``, among ``CNCELEB_TRIAL_LISTS``.
    dev_ratio : float
        Fraction of each training speaker's utterances held out as ``dev``.
    seed : int
        Seed of the dev selection.
    min_duration : float
        Shortest usable file, in seconds.
    sample_rate : int
        Rate the corpus will be read at (for the log of files to resample).
    read_samples : bool
        Decode every file to look for NaN/Inf (False: headers only).
    num_workers : int
        Processes used to check the files.
    skip_prep : bool
        Do nothing and return the paths.

    Returns
    -------
    dict
        Split name -> CSV path, ``trials``: ``<name>.txt`` -> list path, and
        ``enrollment_maps``: ``<name>.txt`` -> map path (multi-utterance lists).
    """
    unknown = set(splits) - {"train", "dev", "test"}
    if unknown:
        raise ValueError(f"unknown CN-Celeb split(s) {sorted(unknown)}: use train, dev, test")
    if "dev" in splits and not ("train" in splits and dev_ratio > 0):
        raise ValueError("the dev split is taken from train: ask for train and set dev_ratio > 0")
    root1 = pathlib.Path(cnceleb1_folder).resolve()
    root2 = None if cnceleb2_folder is None else pathlib.Path(cnceleb2_folder).resolve()
    save_folder = pathlib.Path(save_folder)
    outputs = {name: save_folder / f"{name}.csv" for name in splits}
    names = list(trials) if "test" in splits else []
    if names:
        _check_list_names(names)
    lists = {f"{n}.txt": save_folder / f"{n}.txt" for n in names}
    maps = {
        f"{n}.txt": save_folder / CNCELEB_TRIAL_LISTS[n] for n in names if CNCELEB_TRIAL_LISTS[n]
    }
    result = {**outputs, "trials": lists, "enrollment_maps": maps}
    if skip_prep:
        return result
    options = {
        "cnceleb1_folder": str(root1),
        "cnceleb2_folder": None if root2 is None else str(root2),
        "splits": sorted(splits),
        "trials": names,
        "dev_ratio": dev_ratio if "dev" in splits else 0.0,
        "seed": seed,
        "min_duration": min_duration,
        "read_samples": read_samples,
    }
    written = [*outputs.values(), *lists.values(), *maps.values()]
    if preparation_done(save_folder, "cnceleb", options, written):
        logger.info("%s already prepared with these options: skipping", save_folder)
        return result

    entries, missing = {}, {}
    if "train" in splits:
        dev_list = root1 / "dev" / "dev.lst"
        if not dev_list.is_file():
            raise ValueError(f"CN-Celeb1 training speaker list {dev_list} not found")
        speakers1 = read_file_list(dev_list)
        entries["train"] = _train_entries(root1, speakers1, "CN-Celeb1")
        if root2 is not None:
            speakers2 = _cnceleb2_speakers(root2)
            shared = sorted(set(speakers1) & set(speakers2))
            if shared:
                raise ValueError(
                    f"CN-Celeb1 and CN-Celeb2 share speaker IDs (e.g. {shared[:3]}): "
                    "prepare them apart and combine them with combine_corpora"
                )
            entries["train"] += _train_entries(root2, speakers2, "CN-Celeb2")
    if "test" in splits:
        _, _, missing, files = write_cnceleb_trials(root1, save_folder, names)
        entries["test"] = [
            {"path": str(root1 / rel), "rel": rel, "spk_id": _eval_speaker(rel)}
            for rel in files
            if str(root1 / rel) not in missing
        ]
    outputs = prepare_entries(
        entries,
        save_folder,
        min_duration=min_duration,
        read_samples=read_samples,
        num_workers=num_workers,
        dev_ratio=dev_ratio if "dev" in splits else 0.0,
        seed=seed,
        sample_rate=sample_rate,
        extra_problems=missing,
    )
    save_preparation_options(save_folder, "cnceleb", options)
    return {**outputs, "trials": lists, "enrollment_maps": maps}
