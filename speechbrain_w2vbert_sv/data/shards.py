"""WebDataset tar shards of a prepared training corpus, and their manifest.

At ten million utterances, reading small files from a network filesystem starves the
GPUs; a few hundred large tar files read front to back do not. Any corpus this
package prepares goes through one path: its training CSV (``ID,duration,wav,spk_id``,
from the VoxCeleb, folder or CSV preparation) is shuffled (seeded, so each shard
mixes speakers) and written as ``<prefix>-000000.tar``, ``<prefix>-000001.tar``, ...
of about ``shard_size_mb`` each (the last one smaller). Each sample is
``<key>.flac`` (the file's samples, lossless for PCM sources up to 24 bits; float
sources are stored as 24-bit PCM) and ``<key>.json`` (``id``, ``spk_id``,
``duration``, ``wav``: the source path). Unusable files are reported in
``skipped.txt`` and left out, as in the CSV preparation.

``<prefix>-manifest.json`` lists each shard's samples, speakers, seconds and bytes,
and the sorted training speakers: training checks the shards against it and takes
its speaker -> index map from it (the same map the CSV path builds).

The ``webdataset`` package writes the tars (``ShardWriter``), the format SpeechBrain's
recipes and WeSpeaker's ``shard`` type read.

Command line::

    python -m speechbrain_w2vbert_sv.data.shards results/stage1/1986/save/data/train.csv \\
        /data/shards --shard_size_mb 256 --num_workers 8
"""

import argparse
import concurrent.futures
import io
import json
import math
import os
import pathlib
import random
import sys

import numpy as np
import soundfile
import webdataset
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.audio import AudioFileError
from speechbrain_w2vbert_sv.data.csv_io import read_csv
from speechbrain_w2vbert_sv.data.file_checks import (
    DEFAULT_MIN_DURATION,
    check_audio_file,
    report_problems,
)

logger = get_logger(__name__)

SHARD_PATTERN = "{prefix}-%06d.tar"
MANIFEST_SUFFIX = "-manifest.json"
# Sources whose samples FLAC holds exactly, read as these integers (no rescaling).
_EXACT_SUBTYPES = {"PCM_S8": "int16", "PCM_U8": "int16", "PCM_16": "int16", "PCM_24": "int32"}


def manifest_path(shard):
    """The manifest of a shard, or of a shard pattern: ``<folder>/<prefix>-manifest.json``.

    Arguments
    ---------
    shard : str or os.PathLike
        A shard or shard pattern, ``<folder>/<prefix>-<digits or braces>.tar``.

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> manifest_path("/data/shards/train-{000000..000099}.tar").as_posix()
    '/data/shards/train-manifest.json'
    """
    path = pathlib.Path(os.fspath(shard))
    prefix, sep, _ = path.name.rpartition("-")
    if not sep or not path.name.endswith(".tar"):
        raise ValueError(f"{shard}: not a shard name <prefix>-<number>.tar")
    return path.parent / f"{prefix}{MANIFEST_SUFFIX}"


def read_manifest(path):
    """Reads a shard manifest written by :func:`write_shards`.

    Arguments
    ---------
    path : str or os.PathLike
        The ``<prefix>-manifest.json``.

    Returns
    -------
    dict
        ``shards`` (list of dicts: ``name``, ``samples``, ``speakers``, ``seconds``,
        ``bytes``), ``speakers`` (sorted names), ``num_samples``, ``seconds``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: shard manifest not found (written with the shards)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a shard manifest ({error})") from None
    if not {"shards", "speakers"} <= set(manifest):
        raise ValueError(f"{path}: not a shard manifest (no shards or speakers)")
    return manifest


def encode_sample(row):
    """One CSV row as a shard sample: the file's samples as FLAC bytes, and its json.

    Arguments
    ---------
    row : dict
        A training CSV row (``ID``, ``wav``, ``spk_id``).

    Returns
    -------
    dict
        ``__key__``, ``flac`` (bytes) and ``json`` (bytes).

    Raises
    ------
    speechbrain_w2vbert_sv.data.audio.AudioFileError
        The file is missing, unreadable, too short or holds NaN/Inf.

    Example
    -------
    >>> path = getfixture("tmp_path") / "a.wav"
    >>> soundfile.write(path, np.zeros(1600), 16000)
    >>> sample = encode_sample({"ID": "spk--a.1", "wav": path, "spk_id": "spk"})
    >>> sample["__key__"], json.loads(sample["json"])["duration"]
    ('spk--a_1', 0.1)
    """
    path = row["wav"]
    info = check_audio_file(path, DEFAULT_MIN_DURATION, read_samples=False)
    subtype = soundfile.info(os.fspath(path)).subtype
    dtype = _EXACT_SUBTYPES.get(subtype, "float32")
    try:
        data, rate = soundfile.read(os.fspath(path), dtype=dtype, always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
        raise AudioFileError(path, f"unreadable audio ({error})") from None
    if dtype == "float32" and not np.isfinite(data).all():
        raise AudioFileError(path, "non-finite samples (NaN or Inf)")
    if data.shape[0] / rate < DEFAULT_MIN_DURATION:
        raise AudioFileError(path, f"too short ({data.shape[0]} frames readable)")
    flac = io.BytesIO()
    soundfile.write(
        flac, data, rate, format="FLAC", subtype="PCM_16" if dtype == "int16" else "PCM_24"
    )
    meta = {
        "id": row["ID"],
        "spk_id": row["spk_id"],
        "duration": round(data.shape[0] / rate, 6),
        "wav": os.fspath(path),
        "sample_rate": int(rate),
        "channels": info.channels,
    }
    # WebDataset splits a member name at its first dot: keys hold none.
    return {
        "__key__": row["ID"].replace(".", "_"),
        "flac": flac.getvalue(),
        "json": json.dumps(meta).encode("utf-8"),
    }


def _encode_or_problem(row):
    """Worker of :func:`write_shards`: (sample, None) or (None, problem)."""
    try:
        return encode_sample(row), None
    except AudioFileError as error:
        return None, error.problem


def write_shards(
    csv_file, output_folder, prefix="train", shard_size_mb=256, seed=1234, num_workers=0
):
    """Writes a training CSV's utterances as WebDataset shards, with a manifest.

    Arguments
    ---------
    csv_file : str or os.PathLike
        Training CSV with ``ID,wav,spk_id`` (any preparation of this package).
    output_folder : str or os.PathLike
        Where the shards, the manifest and ``skipped.txt`` are written.
    prefix : str
        Shards are ``<prefix>-%06d.tar``, the manifest ``<prefix>-manifest.json``.
    shard_size_mb : float
        Size of each shard in MB (10^6 bytes); a shard is closed once it reaches it.
    seed : int
        Seed of the shuffle of the utterances.
    num_workers : int
        Processes that read and encode the files (0: this process).

    Returns
    -------
    pathlib.Path
        The manifest.

    Example
    -------
    >>> from speechbrain_w2vbert_sv.data.csv_io import write_csv
    >>> folder = getfixture("tmp_path")
    >>> rows = []
    >>> for i in range(6):
    ...     noise = np.random.default_rng(i).standard_normal(8000) * 0.1  # about 15 kB as FLAC
    ...     soundfile.write(folder / f"{i}.wav", noise, 16000)
    ...     rows.append({"ID": f"u{i}", "duration": 0.5, "wav": folder / f"{i}.wav",
    ...                  "spk_id": f"s{i % 2}"})
    >>> rows[0]["wav"] = folder / "missing.wav"
    >>> write_csv(folder / "train.csv", rows)
    >>> manifest = read_manifest(write_shards(folder / "train.csv", folder / "shards",
    ...                                       shard_size_mb=0.02))
    >>> manifest["num_samples"], [s["samples"] for s in manifest["shards"]]
    (5, [2, 2, 1])
    """
    if shard_size_mb <= 0:
        raise ValueError(f"shard_size_mb must be positive, got {shard_size_mb}")
    rows = read_csv(csv_file)
    if not rows:
        raise ValueError(f"{csv_file}: no utterances")
    missing = {"ID", "wav", "spk_id"} - set(rows[0])
    if missing:
        raise ValueError(f"{csv_file}: missing column(s) {sorted(missing)}")
    random.Random(seed).shuffle(rows)
    output = pathlib.Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    pattern = os.fspath(output / SHARD_PATTERN.format(prefix=prefix))
    for stale in output.glob(f"{prefix}-[0-9]*.tar"):  # a rewrite leaves no old shard behind
        stale.unlink()

    shards, problems, speakers = [], {}, set()
    # The writer counts payload bytes only; shards are closed here on their offset in
    # the tar (headers and padding included: a tenth more for 1 s clips).
    writer = webdataset.ShardWriter(pattern, maxcount=sys.maxsize, maxsize=math.inf, verbose=0)
    with writer:
        for row, (sample, problem) in zip(rows, _encoded(rows, num_workers)):
            if sample is None:
                problems[row["wav"]] = problem
                continue
            if not shards or shards[-1]["bytes"] >= shard_size_mb * 1e6:
                if shards:
                    writer.next_stream()
                shards.append({"samples": 0, "seconds": 0.0, "ids": set(), "bytes": 0})
            writer.write(sample)
            shards[-1]["name"] = pathlib.Path(writer.fname).name
            shards[-1]["bytes"] = writer.tarstream.tarstream.offset
            meta = json.loads(sample["json"])
            shards[-1]["samples"] += 1
            shards[-1]["seconds"] += meta["duration"]
            shards[-1]["ids"].add(meta["spk_id"])
            speakers.add(meta["spk_id"])
    report_problems(problems, output)
    if not shards:
        raise ValueError(f"{csv_file}: no usable utterance (see {output / 'skipped.txt'})")
    for shard in shards:
        shard["speakers"] = len(shard.pop("ids"))
        shard["seconds"] = round(shard["seconds"], 3)
        shard["bytes"] = (output / shard["name"]).stat().st_size
    manifest = {
        "source": os.fspath(csv_file),
        "seed": seed,
        "num_samples": sum(s["samples"] for s in shards),
        "seconds": round(sum(s["seconds"] for s in shards), 3),
        "skipped": len(problems),
        "shards": shards,
        "speakers": sorted(speakers),
    }
    path = output / f"{prefix}{MANIFEST_SUFFIX}"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    logger.info(
        "%d utterances of %d speakers in %d shards in %s (%d skipped)",
        manifest["num_samples"],
        len(speakers),
        len(shards),
        output,
        len(problems),
    )
    return path


def _encoded(rows, num_workers, block=256):
    """(sample, problem) of each row in order; with workers, a block at a time (a pool
    ``map`` over all rows would hold every encoded file in memory at once)."""
    if num_workers <= 0:
        yield from map(_encode_or_problem, rows)
        return
    with concurrent.futures.ProcessPoolExecutor(num_workers) as pool:
        for start in range(0, len(rows), block * num_workers):
            chunk = rows[start : start + block * num_workers]
            yield from pool.map(_encode_or_problem, chunk, chunksize=16)


def main(argv=None):
    """``python -m speechbrain_w2vbert_sv.data.shards TRAIN_CSV OUTPUT_FOLDER [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_w2vbert_sv.data.shards",
        description="Write a prepared training CSV as WebDataset tar shards "
        "(<prefix>-%%06d.tar) with a manifest, for train.py --data_format=shards.",
    )
    parser.add_argument(
        "csv_file",
        help="training CSV (ID,duration,wav,spk_id), e.g. "
        "<output_folder>/save/data/train.csv of a recipe run",
    )
    parser.add_argument("output_folder")
    parser.add_argument("--prefix", default="train")
    parser.add_argument("--shard_size_mb", type=float, default=256)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--num_workers", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = write_shards(
            args.csv_file,
            args.output_folder,
            prefix=args.prefix,
            shard_size_mb=args.shard_size_mb,
            seed=args.seed,
            num_workers=args.num_workers,
        )
    except (ValueError, OSError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    manifest = read_manifest(path)
    print(
        f"{manifest['num_samples']} utterances, {len(manifest['speakers'])} speakers, "
        f"{len(manifest['shards'])} shards; manifest {path}"
    )


if __name__ == "__main__":
    sys.exit(main())
