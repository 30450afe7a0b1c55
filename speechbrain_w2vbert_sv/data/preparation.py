"""Shared steps of every corpus preparation: skipping a finished one, dev split, rows,
combining corpora."""

import csv
import json
import os
import pathlib
import random

from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.csv_io import path_to_id, write_csv
from speechbrain_w2vbert_sv.data.file_checks import (
    DEFAULT_MIN_DURATION,
    SKIPPED_REPORT,
    check_audio_files,
    report_problems,
)

logger = get_logger(__name__)


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


def _input_state(path):
    """Size and modification time of a file (a combination is redone when they change)."""
    stat = os.stat(path)
    return [os.fspath(path), stat.st_size, stat.st_mtime_ns]


def combine_corpora(corpora, save_folder, splits=("train", "dev")):
    """One CSV per split from several prepared corpora, with disjoint speakers.

    Every ``spk_id`` and ``ID`` becomes ``<corpus>--<original>``: speaker IDs of
    different corpora may collide (VoxCeleb, VoxBlink and CN-Celeb all use ``id`` +
    5 digits), and two corpora's speakers are never the same label. Rows are
    streamed (a VoxBlink2 CSV holds millions). Writes ``{split}.csv`` and
    ``combined_corpora.json`` (files and speakers per corpus and split); a later call
    with unchanged input CSVs does nothing.

    Arguments
    ---------
    corpora : dict
        Corpus name -> dict split -> CSV path (a corpus without a split adds nothing
        to it). The CSVs must have the same columns.
    save_folder : str or os.PathLike
        Output folder.
    splits : tuple of str
        Splits to combine.

    Returns
    -------
    dict
        Split name -> path of the combined CSV (splits no corpus has are left out).

    Example
    -------
    >>> from speechbrain_w2vbert_sv.data.csv_io import read_csv
    >>> folder = getfixture("tmp_path")
    >>> write_csv(folder / "a.csv", [{"ID": "u1", "spk_id": "id1"}])
    >>> write_csv(folder / "b.csv", [{"ID": "u1", "spk_id": "id1"}])
    >>> out = combine_corpora({"a": {"train": folder / "a.csv"}, "b": {"train": folder / "b.csv"}},
    ...                       folder / "both")
    >>> [row["spk_id"] for row in read_csv(out["train"])]
    ['a--id1', 'b--id1']
    """
    wanted = {
        split: {name: csvs[split] for name, csvs in corpora.items() if csvs.get(split)}
        for split in splits
    }
    wanted = {split: inputs for split, inputs in wanted.items() if inputs}
    outputs = {split: pathlib.Path(save_folder) / f"{split}.csv" for split in wanted}
    options = {
        split: {name: _input_state(path) for name, path in inputs.items()}
        for split, inputs in wanted.items()
    }
    if preparation_done(save_folder, "combined_corpora", options, outputs.values()):
        return outputs
    counts = {}
    for split, inputs in wanted.items():
        counts[split] = {}
        tmp = outputs[split].with_name(outputs[split].name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        columns = writer = None
        with open(tmp, "w", newline="", encoding="utf-8") as fout:
            for name, path in inputs.items():
                speakers, files = set(), 0
                with open(path, newline="", encoding="utf-8") as fin:
                    reader = csv.DictReader(fin)
                    if columns is None:
                        columns = reader.fieldnames
                        writer = csv.DictWriter(fout, fieldnames=columns)
                        writer.writeheader()
                    elif reader.fieldnames != columns:
                        raise ValueError(
                            f"{path}: columns {reader.fieldnames} differ from {columns} of the "
                            f"other corpora of {split}"
                        )
                    for row in reader:
                        row["ID"] = f"{name}--{row['ID']}"
                        row["spk_id"] = f"{name}--{row['spk_id']}"
                        speakers.add(row["spk_id"])
                        files += 1
                        writer.writerow(row)
                counts[split][name] = {"files": files, "speakers": len(speakers)}
        os.replace(tmp, outputs[split])
        total = {k: sum(c[k] for c in counts[split].values()) for k in ("files", "speakers")}
        logger.info("%s: %s; in all %s", outputs[split], counts[split], total)
    with open(pathlib.Path(save_folder) / "combined_corpora.json", "w", encoding="utf-8") as f:
        json.dump(counts, f, indent=2)
    save_preparation_options(save_folder, "combined_corpora", options)
    return outputs
