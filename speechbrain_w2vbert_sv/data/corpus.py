"""Shared machinery of every corpus preparation: file checks, reports, CSVs, skipping.

A preparation turns audio files into SpeechBrain CSVs with the columns::

    ID,duration,wav,spk_id[,words],sample_rate,channels

``ID`` is :func:`path_to_id` of the path relative to the corpus root (so trial lists,
which hold such relative paths, map onto it), ``duration`` is in seconds, ``wav`` is an
absolute path, ``sample_rate``/``channels`` are the file's own (files at other rates
or with several channels are kept: :func:`speechbrain_w2vbert_sv.audio.load_audio`
resamples and downmixes them). Each file is checked once; unusable files are logged
once each, listed in ``skipped.txt`` of the save folder and left out.

Example
-------
>>> path_to_id("id10270/x6uYqmx31kE/00001.wav")
'id10270--x6uYqmx31kE--00001'
"""

import concurrent.futures
import gzip
import csv
import json
import logging
import os
import pathlib
import random

import numpy as np
import soundfile

from speechbrain_w2vbert_sv.audio import AudioFileError, audio_info

logger = logging.getLogger(__name__)

SKIPPED_REPORT = "skipped.txt"
BASE_COLUMNS = ["ID", "duration", "wav", "spk_id"]
# Shortest file accepted by default: two 25 ms / 10 ms-hop fbank frames, the least
# the w2v-BERT front end (which stacks frame pairs) can turn into one feature vector.
DEFAULT_MIN_DURATION = 0.035


def path_to_id(rel_path):
    """Utterance ID of a path relative to the corpus root.

    Arguments
    ---------
    rel_path : str or os.PathLike
        Relative path, as trial lists hold it.

    Returns
    -------
    str
        The path without its extension, folders joined by ``--``.

    Example
    -------
    >>> path_to_id("dataset/five/00000007_NO_01.flac")
    'dataset--five--00000007_NO_01'
    """
    parts = pathlib.PurePath(os.fspath(rel_path).replace("\\", "/")).with_suffix("").parts
    return "--".join(p for p in parts if p not in ("", ".", "/"))


def read_trial_list(path):
    """Reads a verification trial list (``label enroll test`` per line; ``.gz`` too).

    Arguments
    ---------
    path : str or os.PathLike
        Trial list file.

    Returns
    -------
    list of (int, str, str)
        ``(label, enroll, test)`` with the paths as written in the list.

    Example
    -------
    >>> path = getfixture("tmp_path") / "trials.txt"
    >>> _ = path.write_text("1 a/x.wav a/y.wav\\n0 a/x.wav b/z.wav\\n")
    >>> read_trial_list(path)
    [(1, 'a/x.wav', 'a/y.wav'), (0, 'a/x.wav', 'b/z.wav')]
    """
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    trials = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3 or fields[0] not in ("0", "1"):
                raise ValueError(
                    f"{path}, line {line_no}: expected 'label enroll test' with "
                    f"label 0 or 1, got {line.strip()!r}"
                )
            trials.append((int(fields[0]), fields[1], fields[2]))
    return trials


def trial_list_files(path):
    """The distinct files a trial list refers to, in order of first appearance.

    Arguments
    ---------
    path : str or os.PathLike
        Trial list file (``label enroll test``; ``.gz`` too).

    Returns
    -------
    list of str
        Relative paths as written in the list.

    Example
    -------
    >>> path = getfixture("tmp_path") / "trials.txt"
    >>> _ = path.write_text("1 a/x.wav a/y.wav\\n0 a/x.wav b/z.wav\\n")
    >>> trial_list_files(path)
    ['a/x.wav', 'a/y.wav', 'b/z.wav']
    """
    files = {}
    for _, enroll, test in read_trial_list(path):
        files.setdefault(enroll, None)
        files.setdefault(test, None)
    return list(files)


def read_file_list(file_list):
    """Paths from a list, a text file (one per line) or a CSV (``wav`` or ``file`` column).

    Arguments
    ---------
    file_list : list of str, str or os.PathLike
        The paths themselves, or a file holding them.

    Returns
    -------
    list of str
        The paths as written (relative ones are resolved by the caller).

    Example
    -------
    >>> path = getfixture("tmp_path") / "list.csv"
    >>> _ = path.write_text("file,class\\ndataset/up/1.flac,up\\n")
    >>> read_file_list(path)
    ['dataset/up/1.flac']
    >>> read_file_list(["a.wav", "b.wav"])
    ['a.wav', 'b.wav']
    """
    if isinstance(file_list, (list, tuple)):
        return [os.fspath(p) for p in file_list]
    if not os.path.isfile(file_list):
        raise ValueError(f"file list {file_list} does not exist")
    if os.fspath(file_list).endswith(".csv"):
        with open(file_list, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            column = next((c for c in ("wav", "file") if c in reader.fieldnames), None)
            if column is None:
                raise ValueError(
                    f"file list {file_list}: no 'wav' or 'file' column "
                    f"(columns: {reader.fieldnames})"
                )
            return [row[column] for row in reader]
    with open(file_list, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def check_audio_file(path, min_duration=DEFAULT_MIN_DURATION, read_samples=True):
    """Checks that an audio file is usable; returns its header information.

    Arguments
    ---------
    path : str or os.PathLike
        The file.
    min_duration : float
        Shortest duration accepted, in seconds.
    read_samples : bool
        Decode the samples to look for NaN/Inf (otherwise only the header is read:
        much faster on very large corpora).

    Returns
    -------
    speechbrain_w2vbert_sv.audio.AudioInfo
        Rate, channels and frames of the file.

    Raises
    ------
    speechbrain_w2vbert_sv.audio.AudioFileError
        Missing, empty, unreadable, no frames, NaN/Inf samples, too short.

    Example
    -------
    >>> import numpy, soundfile
    >>> path = getfixture("tmp_path") / "short.wav"
    >>> soundfile.write(path, numpy.zeros(160), 16000)
    >>> check_audio_file(path)
    Traceback (most recent call last):
    ...
    speechbrain_w2vbert_sv.audio.AudioFileError: ...short.wav: too short (0.010 s, ...
    """
    info = audio_info(path)
    if info.frames == 0:
        raise AudioFileError(path, "no audio samples (0 frames)")
    if info.duration < min_duration:
        raise AudioFileError(
            path, f"too short ({info.duration:.3f} s, at least {min_duration:.3f} s needed)"
        )
    if read_samples:
        try:
            data, _ = soundfile.read(os.fspath(path), dtype="float32")
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise AudioFileError(path, f"unreadable audio ({error})") from None
        if not np.isfinite(data).all():
            raise AudioFileError(path, "non-finite samples (NaN or Inf)")
    return info


def _check_one(args):
    """Worker of :func:`check_audio_files`: (path, info or None, problem or None)."""
    path, min_duration, read_samples = args
    try:
        return path, check_audio_file(path, min_duration, read_samples), None
    except AudioFileError as error:
        return path, None, error.problem


def check_audio_files(paths, min_duration=DEFAULT_MIN_DURATION, read_samples=True, num_workers=0):
    """Checks many files, each once, optionally in several processes.

    Arguments
    ---------
    paths : iterable of str
        Files to check (duplicates are checked once).
    min_duration : float
        Shortest duration accepted, in seconds.
    read_samples : bool
        Decode the samples to look for NaN/Inf.
    num_workers : int
        Worker processes (0: check in this process).

    Returns
    -------
    infos : dict
        Path -> AudioInfo of the usable files.
    problems : dict
        Path -> reason of the unusable files.

    Example
    -------
    >>> infos, problems = check_audio_files(["nowhere.wav", "nowhere.wav"])
    >>> problems
    {'nowhere.wav': 'missing file'}
    """
    unique = list(dict.fromkeys(os.fspath(p) for p in paths))
    jobs = [(p, min_duration, read_samples) for p in unique]
    if num_workers > 0 and len(jobs) > 1:
        with concurrent.futures.ProcessPoolExecutor(num_workers) as pool:
            results = list(pool.map(_check_one, jobs, chunksize=64))
    else:
        results = [_check_one(job) for job in jobs]
    infos = {p: info for p, info, _ in results if info is not None}
    problems = {p: problem for p, _, problem in results if problem is not None}
    return infos, problems


def report_problems(problems, save_folder, report_name=SKIPPED_REPORT):
    """Logs each unusable file once and lists them all in a report file.

    Arguments
    ---------
    problems : dict
        Path -> reason.
    save_folder : str or os.PathLike
        Where the report is written (written even when empty, so a clean corpus
        is visibly clean).
    report_name : str
        File name of the report (tab-separated ``path reason`` lines).

    Returns
    -------
    pathlib.Path
        The report.

    Example
    -------
    >>> report = report_problems({"a.wav": "missing file"}, getfixture("tmp_path"))
    >>> report.read_text().splitlines()[-1]
    'a.wav\\tmissing file'
    """
    report = pathlib.Path(save_folder) / report_name
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report, "w", encoding="utf-8") as f:
        f.write("# files left out of the prepared corpus: path<TAB>reason\n")
        for path, problem in problems.items():
            logger.warning("Skipping audio file %s: %s", path, problem)
            f.write(f"{path}\t{problem}\n")
    if problems:
        logger.warning("%d audio file(s) left out, listed in %s", len(problems), report)
    return report


def write_csv(path, rows):
    """Writes rows (dicts with the same keys) as a CSV, atomically.

    Arguments
    ---------
    path : str or os.PathLike
        Output CSV.
    rows : list of dict
        Rows; the columns are the keys of the first row (``BASE_COLUMNS`` order
        for an empty list).

    Example
    -------
    >>> path = getfixture("tmp_path") / "x.csv"
    >>> write_csv(path, [{"ID": "a", "duration": 1.0}])
    >>> path.read_text().split()
    ['ID,duration', 'a,1.0']
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else BASE_COLUMNS
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_csv(path):
    """Reads a CSV as a list of dicts (strings).

    Arguments
    ---------
    path : str or os.PathLike
        CSV with a header line.

    Returns
    -------
    list of dict

    Example
    -------
    >>> path = getfixture("tmp_path") / "x.csv"
    >>> write_csv(path, [{"ID": "a", "spk_id": "s1"}])
    >>> read_csv(path)
    [{'ID': 'a', 'spk_id': 's1'}]
    """
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _options_file(save_folder, name):
    return pathlib.Path(save_folder) / f"{name}_options.json"


def _normalise_options(options):
    """JSON round trip, so tuples and lists (and paths) compare equal."""
    return json.loads(json.dumps(options, default=os.fspath, sort_keys=True))


def preparation_done(save_folder, name, options, outputs):
    """Whether a preparation can be skipped: outputs exist and options are unchanged.

    Arguments
    ---------
    save_folder : str or os.PathLike
        Folder holding ``{name}_options.json``.
    name : str
        Name of the preparation.
    options : dict
        Options of this call (JSON-serialisable; paths are turned into strings).
    outputs : list of str or os.PathLike
        Files the preparation writes.

    Returns
    -------
    bool

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> out = folder / "train.csv"
    >>> _ = out.write_text("ID\\n")
    >>> preparation_done(folder, "demo", {"a": (1, 2)}, [out])
    False
    >>> save_preparation_options(folder, "demo", {"a": (1, 2)})
    >>> preparation_done(folder, "demo", {"a": [1, 2]}, [out])
    True
    >>> preparation_done(folder, "demo", {"a": [1, 3]}, [out])
    False
    """
    opts = _options_file(save_folder, name)
    if not opts.is_file() or not all(os.path.isfile(o) for o in outputs):
        return False
    with open(opts, encoding="utf-8") as f:
        return json.load(f) == _normalise_options(options)


def save_preparation_options(save_folder, name, options):
    """Records the options of a finished preparation (see :func:`preparation_done`).

    Arguments
    ---------
    save_folder : str or os.PathLike
        Where ``{name}_options.json`` is written.
    name : str
        Name of the preparation.
    options : dict
        Options of the call.
    """
    path = _options_file(save_folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_normalise_options(options), f, indent=2, sort_keys=True)


def split_dev(rows, dev_ratio, seed=1234):
    """Holds out a fraction of each speaker's utterances (same speakers) as ``dev``.

    Speakers with a single utterance stay entirely in ``train``.

    Arguments
    ---------
    rows : list of dict
        CSV rows with ``spk_id``.
    dev_ratio : float
        Fraction of each speaker's utterances held out (rounded, at least one when
        the ratio is positive, never all).
    seed : int
        Seed of the selection.

    Returns
    -------
    train, dev : list of dict

    Example
    -------
    >>> rows = [{"ID": str(i), "spk_id": "ab"[i % 2]} for i in range(8)]
    >>> train, dev = split_dev(rows, 0.25)
    >>> len(train), len(dev), sorted(r["spk_id"] for r in dev)
    (6, 2, ['a', 'b'])
    """
    if not 0.0 <= dev_ratio < 1.0:
        raise ValueError(f"dev_ratio must be in [0, 1), got {dev_ratio}")
    by_speaker = {}
    for row in rows:
        by_speaker.setdefault(row["spk_id"], []).append(row)
    rng = random.Random(seed)
    dev_ids = set()
    for spk in sorted(by_speaker):
        utts = by_speaker[spk]
        if dev_ratio == 0.0 or len(utts) < 2:
            continue
        count = min(len(utts) - 1, max(1, round(dev_ratio * len(utts))))
        dev_ids.update(r["ID"] for r in rng.sample(utts, count))
    train = [r for r in rows if r["ID"] not in dev_ids]
    dev = [r for r in rows if r["ID"] in dev_ids]
    return train, dev


def build_rows(entries, infos, problems):
    """CSV rows of the usable entries; duplicate IDs are added to ``problems``.

    Arguments
    ---------
    entries : list of dict
        ``path`` (absolute), ``rel`` (relative to the corpus root) and the columns
        to write after ``ID,duration,wav`` (``spk_id``, optionally ``words``).
    infos : dict
        Path -> AudioInfo of the usable files (from :func:`check_audio_files`).
    problems : dict
        Path -> reason; entries whose file is listed here are left out.

    Returns
    -------
    list of dict
        Rows with the columns ``ID,duration,wav``, the entry's own columns, then
        ``sample_rate,channels``.
    """
    rows, seen = [], {}
    for entry in entries:
        path = entry["path"]
        if path in problems:
            continue
        utt_id = path_to_id(entry["rel"])
        if utt_id in seen:
            if seen[utt_id] != path:
                problems[path] = f"duplicate utterance ID {utt_id} (also {seen[utt_id]})"
            continue
        seen[utt_id] = path
        info = infos[path]
        row = {"ID": utt_id, "duration": round(info.duration, 4), "wav": path}
        row.update((k, v) for k, v in entry.items() if k not in ("path", "rel"))
        row["sample_rate"] = info.sample_rate
        row["channels"] = info.channels
        rows.append(row)
    return rows


def prepare_entries(
    splits,
    save_folder,
    min_duration=DEFAULT_MIN_DURATION,
    read_samples=True,
    num_workers=0,
    dev_ratio=0.0,
    seed=1234,
    sample_rate=16000,
    extra_problems=None,
    report_name=SKIPPED_REPORT,
):
    """Checks the files of all splits once, reports the bad ones and writes the CSVs.

    Arguments
    ---------
    splits : dict
        Split name -> list of entries (see :func:`build_rows`).
    save_folder : str or os.PathLike
        Where ``{split}.csv`` and ``skipped.txt`` go.
    min_duration : float
        Shortest duration accepted, in seconds.
    read_samples : bool
        Decode the samples to look for NaN/Inf.
    num_workers : int
        Worker processes for the checks.
    dev_ratio : float
        If positive, a ``dev`` split is held out of ``train`` by :func:`split_dev`.
    seed : int
        Seed of the dev selection.
    sample_rate : int
        Rate the corpus will be read at (files at other rates are only counted
        in the log: they are resampled when loaded).
    extra_problems : dict, optional
        Path -> reason of files the caller already rejected (e.g. no speaker ID in
        the path), reported with the others.
    report_name : str
        File name of the report of unusable files in ``save_folder``.

    Returns
    -------
    dict
        Split name -> CSV path.
    """
    all_paths = [e["path"] for entries in splits.values() for e in entries]
    infos, problems = check_audio_files(all_paths, min_duration, read_samples, num_workers)
    problems.update(extra_problems or {})
    split_rows = {name: build_rows(entries, infos, problems) for name, entries in splits.items()}
    if dev_ratio > 0:
        if "train" not in split_rows:
            raise ValueError("dev_ratio > 0 needs a 'train' split to take 'dev' from")
        split_rows["train"], split_rows["dev"] = split_dev(split_rows["train"], dev_ratio, seed)
    report_problems(problems, save_folder, report_name)
    outputs = {}
    for name, rows in split_rows.items():
        outputs[name] = pathlib.Path(save_folder) / f"{name}.csv"
        write_csv(outputs[name], rows)
        speakers = {r["spk_id"] for r in rows if "spk_id" in r}
        logger.info("%s: %d files, %d speakers", outputs[name], len(rows), len(speakers))
    other_rate = sum(i.sample_rate != sample_rate for i in infos.values())
    multi_channel = sum(i.channels > 1 for i in infos.values())
    if other_rate or multi_channel:
        logger.info(
            "%d file(s) not at %d Hz (resampled at load time), %d with several "
            "channels (downmixed at load time)",
            other_rate,
            sample_rate,
            multi_channel,
        )
    return outputs
