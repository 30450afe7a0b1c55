"""Preparation of any corpus whose speaker (and transcript) can be read from the path.

:func:`prepare_folder_corpus` takes regular expressions that find the speaker ID (and
optionally a transcript, the ``words`` column) in each file's path relative to the
corpus root. Two presets cover the speech in the project's test data:

* Arabic Speech Commands (``dataset/{keyword}/{speaker8}_NO_{rep}.flac``; its
  ``train.csv``/``val.csv`` give a speaker-disjoint split; transcript = keyword);
* the Free Spoken Digit Dataset (``recordings/{digit}_{speaker}_{index}.flac``,
  8 kHz; its test part is indices 0-4; transcript = the digit, as an English word).

Example
-------
>>> import re
>>> re.search(FSDD_SPEAKER_REGEX, "recordings/7_george_12.flac").group(1)
'george'
>>> re.search(ASC_SPEAKER_REGEX, "dataset/five/00000007_NO_01.flac").group(1)
'00000007'
"""

import os
import pathlib
import re

from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.csv_io import read_file_list
from speechbrain_w2vbert_sv.data.file_checks import DEFAULT_MIN_DURATION
from speechbrain_w2vbert_sv.data.preparation import (
    preparation_done,
    prepare_entries,
    save_preparation_options,
)

logger = get_logger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
ASC_SPEAKER_REGEX = r"(?:^|/)(\d{8})_NO_\d+\.\w+$"
ASC_WORDS_REGEX = r"([^/]+)/[^/]+$"
FSDD_SPEAKER_REGEX = r"(?:^|/)\d+_([^_/]+)_\d+\.\w+$"
FSDD_WORDS_REGEX = r"(?:^|/)(\d+)_[^_/]+_\d+\.\w+$"
DIGIT_WORDS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four",
    "5": "five", "6": "six", "7": "seven", "8": "eight", "9": "nine",
}  # fmt: skip


def find_audio_files(data_folder, extensions=AUDIO_EXTENSIONS):
    """Audio files under a folder, as sorted POSIX paths relative to it.

    Arguments
    ---------
    data_folder : str or os.PathLike
        Root folder (searched recursively, following links).
    extensions : tuple of str
        File name endings accepted (case-insensitive).

    Returns
    -------
    list of str

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "a").mkdir()
    >>> for name in ("a/x.WAV", "a/y.txt", "z.flac"):
    ...     _ = (root / name).write_bytes(b"")
    >>> find_audio_files(root)
    ['a/x.WAV', 'z.flac']
    """
    root = pathlib.Path(data_folder)
    if not root.is_dir():
        raise ValueError(f"data folder {root} does not exist or is not a folder")
    suffixes = tuple(e.lower() for e in extensions)
    found = []
    for folder, _, files in os.walk(root, followlinks=True):
        for name in files:
            if name.lower().endswith(suffixes):
                found.append((pathlib.Path(folder) / name).relative_to(root).as_posix())
    return sorted(found)


def _match(regex, rel_path):
    """Named group ``value``, else group 1, else the whole match (None if no match)."""
    match = regex.search(rel_path)
    if match is None:
        return None
    if "value" in regex.groupindex:
        return match.group("value")
    return match.group(1) if regex.groups else match.group(0)


def prepare_folder_corpus(
    data_folder,
    save_folder,
    speaker_regex,
    words_regex=None,
    words_map=None,
    extensions=AUDIO_EXTENSIONS,
    file_lists=None,
    exclude_speakers=(),
    dev_ratio=0.0,
    seed=1234,
    min_duration=DEFAULT_MIN_DURATION,
    sample_rate=16000,
    read_samples=True,
    num_workers=0,
    skip_prep=False,
):
    """Prepares SpeechBrain CSVs for a corpus whose speaker is in the file path.

    Writes ``{split}.csv`` (columns ``ID,duration,wav,spk_id[,words],sample_rate,
    channels``, see :mod:`speechbrain_w2vbert_sv.data.csv_io`), ``skipped.txt`` (the
    unusable files with their reason) and ``folder_corpus_options.json`` (a later
    call with the same options and existing CSVs does nothing).

    Arguments
    ---------
    data_folder : str or os.PathLike
        Corpus root; IDs and regular expressions use paths relative to it.
    save_folder : str or os.PathLike
        Output folder.
    speaker_regex : str
        Searched in each relative POSIX path; the speaker is the group named
        ``value``, else group 1, else the whole match. Files that do not match are
        reported and left out.
    words_regex : str, optional
        Same for the transcript (``words`` column); no match gives an empty string.
    words_map : dict, optional
        Maps the matched transcript to the written one (e.g. ``"7"`` -> ``"seven"``).
    extensions : tuple of str
        Audio file endings searched for when ``file_lists`` is not given.
    file_lists : dict, optional
        Split name -> files of that split: a list of paths, a text file (one path a
        line) or a CSV with a ``wav`` or ``file`` column; relative paths are relative
        to ``data_folder``. Listed files that do not exist are reported. Default:
        every audio file under ``data_folder`` in one ``train`` split.
    exclude_speakers : iterable of str
        Speakers left out of ``train`` (and so of ``dev``), e.g. test speakers.
    dev_ratio : float
        Fraction of each training speaker's utterances held out as ``dev``
        (same speakers: for classification accuracy during training).
    seed : int
        Seed of the dev selection.
    min_duration : float
        Shortest usable file, in seconds.
    sample_rate : int
        Rate the corpus will be read at (for the log of files to resample).
    read_samples : bool
        Decode every file to look for NaN/Inf (False: headers only, faster).
    num_workers : int
        Processes used to check the files.
    skip_prep : bool
        Do nothing and return the CSV paths (for recipes run on prepared data).

    Returns
    -------
    dict
        Split name -> path of its CSV.

    Example
    -------
    >>> import numpy, soundfile
    >>> root = getfixture("tmp_path") / "corpus"
    >>> for spk in ("anna", "bob"):
    ...     (root / spk).mkdir(parents=True)
    ...     for utt in range(3):
    ...         soundfile.write(root / spk / f"{utt}.wav", numpy.zeros(1600), 16000)
    >>> csvs = prepare_folder_corpus(root, root.parent / "save", r"^([^/]+)/")
    >>> from speechbrain_w2vbert_sv.data.csv_io import read_csv
    >>> read_csv(csvs["train"])[0]["ID"], len(read_csv(csvs["train"]))
    ('anna--0', 6)
    """
    data_folder = pathlib.Path(data_folder).resolve()
    split_names = ["train"] if file_lists is None else list(file_lists)
    if dev_ratio > 0:
        split_names.append("dev")
    outputs = {name: pathlib.Path(save_folder) / f"{name}.csv" for name in split_names}
    if skip_prep:
        return outputs
    options = {
        "data_folder": str(data_folder),
        "speaker_regex": speaker_regex,
        "words_regex": words_regex,
        "words_map": words_map,
        "extensions": list(extensions),
        "file_lists": {
            k: v if isinstance(v, (list, tuple)) else os.fspath(v)
            for k, v in (file_lists or {}).items()
        },
        "exclude_speakers": sorted(exclude_speakers),
        "dev_ratio": dev_ratio,
        "seed": seed,
        "min_duration": min_duration,
        "read_samples": read_samples,
    }
    if preparation_done(save_folder, "folder_corpus", options, outputs.values()):
        logger.info("%s already prepared with these options: skipping", save_folder)
        return outputs

    if file_lists is None:
        listed = {"train": find_audio_files(data_folder, extensions)}
    else:
        listed = {}
        for name, file_list in file_lists.items():
            if not isinstance(file_list, (list, tuple)) and not os.path.isabs(file_list):
                file_list = data_folder / file_list
            listed[name] = read_file_list(file_list)

    spk_regex = re.compile(speaker_regex)
    txt_regex = re.compile(words_regex) if words_regex else None
    excluded = set(exclude_speakers)
    splits, path_problems = {}, {}
    for name, paths in listed.items():
        entries = []
        for path in paths:
            full = data_folder / path
            try:
                rel = full.relative_to(data_folder).as_posix()
            except ValueError:  # an absolute path outside the corpus root
                rel = full.as_posix()
            spk = _match(spk_regex, rel)
            if spk is None:
                path_problems[str(full)] = f"no speaker ID found in the path by {speaker_regex!r}"
                continue
            if name == "train" and spk in excluded:
                continue
            entry = {"path": str(full), "rel": rel, "spk_id": spk}
            if txt_regex is not None:
                words = _match(txt_regex, rel) or ""
                entry["words"] = (words_map or {}).get(words, words)
            entries.append(entry)
        splits[name] = entries
    outputs = prepare_entries(
        splits,
        save_folder,
        min_duration=min_duration,
        read_samples=read_samples,
        num_workers=num_workers,
        dev_ratio=dev_ratio,
        seed=seed,
        sample_rate=sample_rate,
        extra_problems=path_problems,
    )
    save_preparation_options(save_folder, "folder_corpus", options)
    return outputs


def prepare_arabic_speech_commands(data_folder, save_folder, **kwargs):
    """Arabic Speech Commands: ``train`` (18 speakers) and ``test`` (6 val speakers).

    Uses the dataset's own speaker-disjoint ``train.csv``/``val.csv``; the ``words``
    column is the keyword. The val speakers are those of its trial list
    ``trials/val_speakers_text_independent.txt``.

    Arguments
    ---------
    data_folder : str or os.PathLike
        Folder holding ``dataset/``, ``train.csv`` and ``val.csv``.
    save_folder : str or os.PathLike
        Output folder.
    **kwargs
        Further options of :func:`prepare_folder_corpus` (``dev_ratio``, ...).

    Returns
    -------
    dict
        ``{"train": ..., "test": ...}`` (plus ``"dev"`` with ``dev_ratio``) CSV paths.
    """
    return prepare_folder_corpus(
        data_folder,
        save_folder,
        speaker_regex=ASC_SPEAKER_REGEX,
        words_regex=ASC_WORDS_REGEX,
        file_lists={"train": "train.csv", "test": "val.csv"},
        **kwargs,
    )


def prepare_fsdd(data_folder, save_folder, test_indices=range(5), **kwargs):
    """Free Spoken Digit Dataset: ``train`` and ``test`` parts of the same 6 speakers.

    The official test part is recordings with index 0-4 (its trial list
    ``trials/test_part_balanced.txt`` uses them); the files are 8 kHz and are
    resampled at load time. The ``words`` column is the digit as an English word.

    Arguments
    ---------
    data_folder : str or os.PathLike
        Folder holding ``recordings/``.
    save_folder : str or os.PathLike
        Output folder.
    test_indices : iterable of int
        Recording indices of the test part.
    **kwargs
        Further options of :func:`prepare_folder_corpus`.

    Returns
    -------
    dict
        ``{"train": ..., "test": ...}`` CSV paths.
    """
    test_indices = {int(i) for i in test_indices}
    files = find_audio_files(data_folder, AUDIO_EXTENSIONS)
    index = re.compile(r"_(\d+)\.\w+$")
    lists = {"train": [], "test": []}
    for rel in files:
        match = index.search(rel)
        part = "test" if match and int(match.group(1)) in test_indices else "train"
        lists[part].append(rel)
    return prepare_folder_corpus(
        data_folder,
        save_folder,
        speaker_regex=FSDD_SPEAKER_REGEX,
        words_regex=FSDD_WORDS_REGEX,
        words_map=DIGIT_WORDS,
        file_lists=lists,
        **kwargs,
    )
