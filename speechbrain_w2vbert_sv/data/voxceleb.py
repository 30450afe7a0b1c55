"""VoxCeleb1/2 preparation, official trial lists and m4a conversion.

Audio files are found by their last three path components ``idXXXXX/<video>/<utt>``,
whatever lies above them, so both official layouts work:

* VoxCeleb1: ``wav/idXXXXX/<video>/<utt>.wav``;
* VoxCeleb2: ``dev/aac/idXXXXX/<video>/<utt>.m4a``, which libsndfile (and so
  soundfile) cannot decode: convert it first with :func:`convert_to_wav` (needs
  ``ffmpeg``) or ``ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav``. Converted files may
  sit next to the m4a files or in a separate tree.

The ID of ``id10270/x6uYqmx31kE/00001.wav`` is ``id10270--x6uYqmx31kE--00001``
(:func:`~speechbrain_w2vbert_sv.data.csv_io.path_to_id` of the path written in the
trial lists). Speakers of the chosen verification list(s) never enter ``train``.

Example
-------
>>> TRIAL_LISTS["O"]
'veri_test2.txt'
"""

import concurrent.futures
import gzip
import os
import pathlib
import re
import shutil
import subprocess

from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.audio import COMPRESSED_SUFFIXES
from speechbrain_w2vbert_sv.data.csv_io import path_to_id
from speechbrain_w2vbert_sv.data.file_checks import DEFAULT_MIN_DURATION
from speechbrain_w2vbert_sv.data.preparation import (
    preparation_done,
    prepare_entries,
    save_preparation_options,
)
from speechbrain_w2vbert_sv.scoring.trials import read_trials

logger = get_logger(__name__)

# Short names of the official VoxCeleb1 trial lists (O cleaned is the usual "Vox1-O").
TRIAL_LISTS = {
    "O": "veri_test2.txt",
    "O-original": "veri_test.txt",
    "E": "list_test_all.txt",
    "H": "list_test_hard.txt",
    "E-cleaned": "list_test_all2.txt",
    "H-cleaned": "list_test_hard2.txt",
}
VOXCELEB_EXTENSIONS = (".wav", ".flac") + COMPRESSED_SUFFIXES
_UTTERANCE = re.compile(r"(?:^|/)(id\d+/[^/]+/[^/]+)$")


def _conversion_hint(count, example):
    return (
        f"{count} compressed audio file(s) (e.g. {example}) that soundfile cannot "
        "decode. Convert them to wav first, with "
        "speechbrain_w2vbert_sv.data.convert_to_wav(src_folder, dst_folder) (uses "
        "ffmpeg) or per file `ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav`, then point "
        "data_folder at the converted tree."
    )


def find_voxceleb_files(data_folder, extensions=VOXCELEB_EXTENSIONS):
    """VoxCeleb audio files under a folder, by relative ``idX/video/utt.ext`` path.

    A compressed file (m4a, ...) with an already converted wav/flac sibling is
    ignored; any other compressed file raises a ValueError saying how to convert.

    Arguments
    ---------
    data_folder : str or os.PathLike
        Folder searched recursively (VoxCeleb1 ``wav/``, VoxCeleb2 ``dev/aac/`` or
        any folder above them).
    extensions : tuple of str
        File endings searched for.

    Returns
    -------
    dict
        ``"idX/video/utt.ext"`` -> absolute path.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "wav/id10001/vid").mkdir(parents=True)
    >>> _ = (root / "wav/id10001/vid/00001.wav").write_bytes(b"")
    >>> list(find_voxceleb_files(root))
    ['id10001/vid/00001.wav']
    """
    root = pathlib.Path(data_folder).resolve()
    if not root.is_dir():
        raise ValueError(f"VoxCeleb data folder {root} does not exist or is not a folder")
    found, compressed = {}, []
    suffixes = tuple(e.lower() for e in extensions)
    for folder, _, files in os.walk(root, followlinks=True):
        decodable_stems = {
            os.path.splitext(n)[0] for n in files if not n.lower().endswith(COMPRESSED_SUFFIXES)
        }
        for name in files:
            if not name.lower().endswith(suffixes):
                continue
            path = pathlib.Path(folder) / name
            match = _UTTERANCE.search(path.relative_to(root).as_posix())
            if match is None:
                continue
            if name.lower().endswith(COMPRESSED_SUFFIXES):
                if os.path.splitext(name)[0] not in decodable_stems:
                    compressed.append(path)
                continue
            found[match.group(1)] = str(path)
    if compressed:
        raise ValueError(f"{root}: " + _conversion_hint(len(compressed), compressed[0]))
    return dict(sorted(found.items()))


def trial_list_speakers(trial_list):
    """Speakers (first path component) of the files a trial list uses.

    Arguments
    ---------
    trial_list : str or os.PathLike
        ``label enroll test`` file (``.gz`` too).

    Returns
    -------
    set of str

    Example
    -------
    >>> path = getfixture("tmp_path") / "t.txt"
    >>> _ = path.write_text("1 id1/a/1.wav id1/b/2.wav\\n0 id1/a/1.wav id2/c/1.wav\\n")
    >>> sorted(trial_list_speakers(path))
    ['id1', 'id2']
    """
    return {rel.split("/")[0] for rel in read_trials(trial_list).utterances}


def place_trial_lists(source_folder, save_folder, names=None):
    """Copies official trial lists into the save folder, decompressing ``.gz`` ones.

    Arguments
    ---------
    source_folder : str or os.PathLike
        Folder holding the lists as ``name`` or ``name.gz``.
    save_folder : str or os.PathLike
        Where the plain-text lists are written (an up-to-date copy is kept).
    names : list of str, optional
        Lists wanted, by file name or short name (keys of ``TRIAL_LISTS``: O, E,
        H, ...). A wanted list that is absent raises ValueError. Default: every
        known list present in ``source_folder``.

    Returns
    -------
    dict
        File name -> path of the plain-text list in ``save_folder``.

    Example
    -------
    >>> import gzip
    >>> src, dst = getfixture("tmp_path") / "src", getfixture("tmp_path") / "dst"
    >>> src.mkdir()
    >>> with gzip.open(src / "list_test_hard.txt.gz", "wt") as f:
    ...     _ = f.write("1 id1/a/1.wav id1/b/1.wav\\n")
    >>> lists = place_trial_lists(src, dst, names=["H"])
    >>> lists["list_test_hard.txt"].read_text()
    '1 id1/a/1.wav id1/b/1.wav\\n'
    """
    source_folder, save_folder = pathlib.Path(source_folder), pathlib.Path(save_folder)
    wanted = [TRIAL_LISTS.get(n, n) for n in (names or TRIAL_LISTS.values())]
    placed = {}
    for name in wanted:
        candidates = [source_folder / name, source_folder / (name + ".gz")]
        source = next((c for c in candidates if c.is_file()), None)
        if source is None:
            if names:
                raise ValueError(f"trial list {name} (or {name}.gz) not found in {source_folder}")
            continue
        target = save_folder / name
        if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime:
            save_folder.mkdir(parents=True, exist_ok=True)
            opener = gzip.open if source.suffix == ".gz" else open
            tmp = target.with_name(name + ".tmp")
            with opener(source, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            os.replace(tmp, target)
        placed[name] = target
    return placed


def prepare_voxceleb(
    data_folder,
    save_folder,
    splits=("train", "dev", "test"),
    verification_list=None,
    dev_ratio=0.01,
    seed=1234,
    min_duration=DEFAULT_MIN_DURATION,
    sample_rate=16000,
    read_samples=True,
    num_workers=0,
    skip_prep=False,
):
    """Prepares VoxCeleb1/2 CSVs: ``train``, ``dev`` (held out of train) and ``test``.

    Writes ``{split}.csv`` (``ID,duration,wav,spk_id,sample_rate,channels``),
    ``skipped.txt`` and ``voxceleb_options.json`` (a later call with the same
    options and existing CSVs does nothing).

    Arguments
    ---------
    data_folder : str, os.PathLike or list of them
        VoxCeleb root(s), e.g. ``[vox1_folder, vox2_converted_folder]``; see the
        module docstring for the layouts.
    save_folder : str or os.PathLike
        Output folder.
    splits : tuple of str
        Among ``train`` (utterances of every speaker not in a verification list),
        ``dev`` (``dev_ratio`` of each training speaker's utterances, same
        speakers, for validation accuracy) and ``test`` (every file the
        verification lists use; absent ones are reported as missing).
    verification_list : str, os.PathLike or list of them, optional
        Trial list(s) (``label enroll test``, ``.gz`` too) whose speakers are kept
        out of training, e.g. ``veri_test2.txt`` (Vox1-O) or ``list_test_all.txt``
        (Vox1-E, which holds all VoxCeleb1 speakers). Needed for ``test``.
    dev_ratio : float
        Fraction of each training speaker's utterances held out as ``dev``.
    seed : int
        Seed of the dev selection.
    min_duration : float
        Shortest usable file, in seconds.
    sample_rate : int
        Rate the corpus will be read at (for the log of files to resample).
    read_samples : bool
        Decode every file to look for NaN/Inf (False: headers only; a full check
        of VoxCeleb2 takes hours on few cores).
    num_workers : int
        Processes used to check the files.
    skip_prep : bool
        Do nothing and return the CSV paths.

    Returns
    -------
    dict
        Split name -> path of its CSV.
    """
    unknown = set(splits) - {"train", "dev", "test"}
    if unknown:
        raise ValueError(f"unknown VoxCeleb split(s) {sorted(unknown)}: use train, dev, test")
    if "dev" in splits and not ("train" in splits and dev_ratio > 0):
        raise ValueError("the dev split is taken from train: ask for train and set dev_ratio > 0")
    folders = data_folder if isinstance(data_folder, (list, tuple)) else [data_folder]
    folders = [str(pathlib.Path(f).resolve()) for f in folders]
    if verification_list is None:
        lists = []
    elif isinstance(verification_list, (list, tuple)):
        lists = [str(pathlib.Path(v).resolve()) for v in verification_list]
    else:
        lists = [str(pathlib.Path(verification_list).resolve())]
    if "test" in splits and not lists:
        raise ValueError("the test split needs a verification_list")
    outputs = {name: pathlib.Path(save_folder) / f"{name}.csv" for name in splits}
    if skip_prep:
        return outputs
    options = {
        "data_folder": folders,
        "splits": sorted(splits),
        "verification_list": lists,
        "dev_ratio": dev_ratio if "dev" in splits else 0.0,
        "seed": seed,
        "min_duration": min_duration,
        "read_samples": read_samples,
    }
    if preparation_done(save_folder, "voxceleb", options, outputs.values()):
        logger.info("%s already prepared with these options: skipping", save_folder)
        return outputs

    files = {}
    for folder in folders:
        files.update(find_voxceleb_files(folder))
    by_id = {path_to_id(rel): (rel, path) for rel, path in files.items()}
    test_speakers = set()
    for trial_list in lists:
        test_speakers |= trial_list_speakers(trial_list)
    logger.info(
        "%d VoxCeleb files found; %d speakers of the verification list(s) kept out of training",
        len(files),
        len(test_speakers),
    )
    entries, missing = {}, {}
    if "train" in splits:
        entries["train"] = [
            {"path": path, "rel": rel, "spk_id": rel.split("/")[0]}
            for rel, path in files.items()
            if rel.split("/")[0] not in test_speakers
        ]
    if "test" in splits:
        test_entries = {}
        for trial_list in lists:
            for rel in read_trials(trial_list).files:
                found = by_id.get(path_to_id(rel))
                if found is None:
                    missing.setdefault(rel, f"missing file (used by {trial_list})")
                else:
                    test_entries[found[1]] = {
                        "path": found[1],
                        "rel": found[0],
                        "spk_id": rel.split("/")[0],
                    }
        entries["test"] = list(test_entries.values())
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
    save_preparation_options(save_folder, "voxceleb", options)
    return outputs


def _convert_one(job):
    """Worker of :func:`convert_to_wav`: one ffmpeg call; the error text or None."""
    ffmpeg, source, target, sample_rate = job
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.stem + ".part.wav")
    command = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(source),
               "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", str(tmp)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        return f"{source}: {result.stderr.strip() or 'ffmpeg failed'}"
    os.replace(tmp, target)
    return None


def convert_to_wav(
    src_folder,
    dst_folder,
    extensions=(".m4a",),
    sample_rate=16000,
    num_workers=1,
    ffmpeg="ffmpeg",
):
    """Converts compressed audio (VoxCeleb2 m4a) to 16-bit mono wav with ffmpeg.

    The tree under ``src_folder`` is mirrored under ``dst_folder`` (``.wav``
    endings); files already converted are left alone, so an interrupted run resumes.

    Arguments
    ---------
    src_folder : str or os.PathLike
        Folder searched recursively for ``extensions``.
    dst_folder : str or os.PathLike
        Output root (may equal ``src_folder``: wavs are written next to the m4a).
    extensions : tuple of str
        Endings of the files to convert.
    sample_rate : int
        Output rate.
    num_workers : int
        Parallel ffmpeg processes.
    ffmpeg : str
        ffmpeg executable (name on the PATH or path).

    Returns
    -------
    int
        Number of files converted by this call.

    Raises
    ------
    RuntimeError
        ffmpeg is not found, or some conversions failed (all failures listed).

    Example
    -------
    >>> convert_to_wav(getfixture("tmp_path"), getfixture("tmp_path"), ffmpeg="no-ffmpeg-here")
    Traceback (most recent call last):
    ...
    RuntimeError: ffmpeg executable 'no-ffmpeg-here' not found: ...
    """
    executable = shutil.which(ffmpeg)
    if executable is None:
        raise RuntimeError(
            f"ffmpeg executable {ffmpeg!r} not found: install ffmpeg (e.g. `apt-get "
            "install ffmpeg` or `conda install ffmpeg`) or pass its path as ffmpeg="
        )
    src, dst = pathlib.Path(src_folder), pathlib.Path(dst_folder)
    suffixes = tuple(e.lower() for e in extensions)
    jobs = []
    for folder, _, files in os.walk(src, followlinks=True):
        for name in sorted(files):
            if name.lower().endswith(suffixes):
                source = pathlib.Path(folder) / name
                target = (dst / source.relative_to(src)).with_suffix(".wav")
                if not target.is_file():
                    jobs.append((executable, source, target, sample_rate))
    with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
        errors = [e for e in pool.map(_convert_one, jobs) if e is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} conversion(s) failed:\n" + "\n".join(errors))
    logger.info("converted %d file(s) from %s to %s", len(jobs), src, dst)
    return len(jobs)
