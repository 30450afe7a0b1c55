"""Checks of audio files before training or scoring: the unusable ones are reported.

Each file is checked once; unusable files (unreadable, truncated, too short) are logged
once each, listed in ``skipped.txt`` of the save folder and left out. Files at other
rates or with several channels are kept:
:func:`speechbrain_w2vbert_sv.data.audio.load_audio` resamples and downmixes them.
"""

import concurrent.futures
import os
import pathlib

import numpy as np
import soundfile
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.audio import AudioFileError, audio_info

logger = get_logger(__name__)

SKIPPED_REPORT = "skipped.txt"


# Shortest file accepted by default: two 25 ms / 10 ms-hop fbank frames, the least
# the w2v-BERT front end (which stacks frame pairs) can turn into one feature vector.
DEFAULT_MIN_DURATION = 0.035


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
    speechbrain_w2vbert_sv.data.audio.AudioInfo
        Rate, channels and frames of the file.

    Raises
    ------
    speechbrain_w2vbert_sv.data.audio.AudioFileError
        Missing, empty, unreadable, no frames, NaN/Inf samples, too short.

    Example
    -------
    >>> import numpy, soundfile
    >>> path = getfixture("tmp_path") / "short.wav"
    >>> soundfile.write(path, numpy.zeros(160), 16000)
    >>> check_audio_file(path)
    Traceback (most recent call last):
    ...
    speechbrain_w2vbert_sv.data.audio.AudioFileError: ...short.wav: too short (0.010 s, ...
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
