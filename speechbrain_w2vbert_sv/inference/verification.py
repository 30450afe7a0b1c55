"""Verification of a whole trial list: file checks, embeddings, scoring, result files.

``verify_trial_list`` checks every file the run needs (trial lists, cohort, mean
list) before embedding anything, embeds each distinct file once (whole utterances),
then scores the trials by cosine, optionally after mean-embedding subtraction, with
adaptive s-norm and with QMF calibration fitted on a calibration trial list. It
writes the scores of each system, a results table (EER, minDCF at p_target 0.01 and
0.05), ``results.json`` and PNG plots (DET curves, score histograms).
"""

import csv
import dataclasses
import json
import os
import pathlib

import numpy as np
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv import scoring
from speechbrain_w2vbert_sv.data.csv_io import read_file_list
from speechbrain_w2vbert_sv.data.file_checks import (
    DEFAULT_MIN_DURATION,
    check_audio_files,
)
from speechbrain_w2vbert_sv.inference.interface import load_model
from speechbrain_w2vbert_sv.inference.precomputed_embeddings import embedding_rows
from speechbrain_w2vbert_sv.scoring import plots
from speechbrain_w2vbert_sv.scoring.metrics import (
    compute_act_dcf,
    compute_cllr,
    det_curve,
)

logger = get_logger(__name__)

# How many offending lines or files an error message lists.
MAX_REPORTED = 10


def _problem_report(name, lines):
    """``name:`` then the first MAX_REPORTED lines, indented ("..." if cut)."""
    shown = [f"  {line}" for line in lines[:MAX_REPORTED]]
    if len(lines) > MAX_REPORTED:
        shown.append("  ...")
    return "\n".join([f"{name}:"] + shown)


def check_files(
    trial_lists=(),
    file_lists=(),
    min_duration=DEFAULT_MIN_DURATION,
    read_samples=False,
    num_workers=0,
):
    """Checks every audio file a verification run needs, before any embedding work.

    Arguments
    ---------
    trial_lists : sequence of (str, Trials, str)
        ``(trial list file, its Trials, data folder of its paths)``.
    file_lists : sequence of (str, list of str)
        ``(list name, absolute paths)`` of other files (cohort, mean list).
    min_duration : float
        Shortest usable duration in seconds (the front end needs 35 ms).
    read_samples : bool
        Decode every file (finds damaged audio data, slower) rather than reading
        the headers only.
    num_workers : int
        Processes for the check.

    Returns
    -------
    dict
        Absolute path -> duration in seconds of every file.

    Raises
    ------
    ValueError
        Naming, for each list with unusable files, the first offending lines (line
        number, path and problem) or files.

    Example
    -------
    >>> check_files(file_lists=[("cohort", ["/nowhere/c.wav"])])
    Traceback (most recent call last):
    ...
    ValueError: 1 audio file(s) cannot be used ...
    cohort:
      /nowhere/c.wav: missing file
    """
    paths = [os.path.join(root, f) for _, trials, root in trial_lists for f in trials.files]
    for _, files in file_lists:
        paths.extend(files)
    infos, problems = check_audio_files(paths, min_duration, read_samples, num_workers)
    if problems:
        reports = []
        for list_file, trials, root in trial_lists:
            bad = {f for f in trials.files if os.path.join(root, f) in problems}
            if not bad:
                continue
            lines = []
            for k, pair in enumerate(zip(trials.enroll_index, trials.test_index)):
                used = (f for i in pair for f in trials.members(trials.utterances[i]))
                utt = next((f for f in used if f in bad), None)
                if utt is not None:
                    path = os.path.join(root, utt)
                    where = "trial" if trials.line_numbers is None else "line"
                    number = k + 1 if trials.line_numbers is None else trials.line_numbers[k]
                    lines.append(f"{where} {number}: {utt}: {problems[path]} ({path})")
                if len(lines) > MAX_REPORTED:
                    break
            reports.append(_problem_report(f"{list_file} ({len(bad)} file(s))", lines))
        for name, files in file_lists:
            lines = [f"{p}: {problems[p]}" for p in dict.fromkeys(files) if p in problems]
            if lines:
                reports.append(_problem_report(name, lines))
        raise ValueError(
            f"{len(problems)} audio file(s) cannot be used (checked before embedding "
            "anything):\n" + "\n".join(reports)
        )
    return {path: info.duration for path, info in infos.items()}


def read_cohort(file_list, root, per_speaker=False):
    """Paths of a cohort list, and each file's speaker when speakers are averaged.

    Arguments
    ---------
    file_list : str or os.PathLike
        Text file (one path per line) or CSV (``wav`` or ``file`` column, and a
        ``spk_id`` column for ``per_speaker``).
    root : str
        Folder of relative paths.
    per_speaker : bool
        Read the speakers (one cohort entry per speaker: its mean embedding).

    Returns
    -------
    paths : list of str
        Absolute paths.
    speakers : list of str or None
        Speaker of each path, None unless ``per_speaker``.
    """
    paths = [os.path.join(root, p) for p in read_file_list(file_list)]
    if not per_speaker:
        return paths, None
    if not os.fspath(file_list).endswith(".csv"):
        raise ValueError(f"cohort_per_speaker needs a CSV with a spk_id column: {file_list}")
    with open(file_list, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "spk_id" not in (reader.fieldnames or ()):
            raise ValueError(f"{file_list}: no spk_id column (columns: {reader.fieldnames})")
        speakers = [row["spk_id"] for row in reader]
    return paths, speakers


def _speaker_means(matrix, speakers):
    """One row per speaker: the mean of its rows (in order of first appearance)."""
    index = {s: i for i, s in enumerate(dict.fromkeys(speakers))}
    rows = torch.as_tensor([index[s] for s in speakers])
    sums = torch.zeros(len(index), matrix.shape[1]).index_add_(0, rows, matrix)
    return sums / torch.bincount(rows, minlength=len(index))[:, None]


def _eer_threshold(scores, labels):
    """Threshold where the miss and false-alarm rates are closest."""
    curve = det_curve(scores, labels)
    index = int(np.argmin(np.abs(curve.p_miss - curve.p_fa)))
    return float(min(curve.thresholds[index], np.max(scores)))


def _score_list(trials, matrix, mean, cohort, top_n, durations):
    """Scores of one trial list per system, and the QMF quality measures.

    ``matrix`` and ``durations`` have one row/value per ``trials.utterances``.
    """
    ids = trials.utterances
    systems = {"cosine": scoring.cosine_scores(trials, matrix, ids=ids, mean=mean)}
    cohort_mean = None
    if cohort is not None:
        snormed, (cohort_mean, _) = scoring.adaptive_snorm(
            systems["cosine"],
            trials,
            matrix,
            cohort,
            ids=ids,
            mean=mean,
            top_n=top_n,
            return_statistics=True,
        )
        systems["asnorm"] = snormed
    qualities = scoring.quality_measures(
        trials, matrix, ids=ids, durations=durations, cohort_mean=cohort_mean
    )
    return systems, qualities


@dataclasses.dataclass
class VerificationOptions:
    """Settings of :func:`verify_trial_list` (those of ``hparams/verification.yaml``).

    Attributes
    ----------
    name : str, optional
        Name of the list in tables (default: the trial list's file name).
    enrollment_map : str, optional
        ``model utt1 utt2 ...`` lines (CN-Celeb's ``enroll.map``): the trial list's
        ids that are models stand for the mean embedding of their utterances.
    mean_list : str, optional
        Files whose mean embedding is subtracted before every cosine.
    cohort_list : str, optional
        Cohort files of adaptive s-norm (speakers disjoint from the trials).
    cohort_data_folder : str, optional
        Folder of relative paths in ``mean_list``/``cohort_list`` (default: the
        trials' data folder).
    cohort_per_speaker : bool
        One cohort entry per speaker (mean embedding; needs a CSV with ``spk_id``).
    cohort_top_n : int
        Cohort scores kept per utterance.
    calibration_trials : str, optional
        Trial list (labels known, speakers disjoint from the trials) on which QMF
        calibration is fitted; it is then applied to the trials.
    calibration_data_folder : str, optional
        Folder of its paths (default: the trials' data folder).
    check_samples : bool
        Decode every file in the check (otherwise headers only).
    make_plots : bool
        Write DET and histogram PNGs.
    save_embeddings : bool
        Also save ``embeddings.pt`` (``{"paths": [...], "embeddings": [N, E]}``).
    embeddings : str or list of str, optional
        Embeddings computed beforehand by ``w2vbert-sv embed`` (store folders, read
        memory-mapped, or ``.pt``/``.npz`` files): the files they hold are not embedded
        again (see ``precomputed_embeddings``); the model is loaded only for the others.
    memory_efficient_attention : bool, optional
        Compute relative-key attention in query chunks (long utterances fit in
        memory; the same numbers up to float rounding); False: HF's forward; None:
        the model's own setting.
    batch_seconds, max_batch_size, max_padding, num_workers :
        Batching of ``embed_files`` (None: its defaults).

    Example
    -------
    >>> VerificationOptions.from_hparams({"cohort_top_n": 200, "output_folder": "x"}).cohort_top_n
    200
    """

    name: str = None
    enrollment_map: str = None
    mean_list: str = None
    cohort_list: str = None
    cohort_data_folder: str = None
    cohort_per_speaker: bool = False
    cohort_top_n: int = 300
    calibration_trials: str = None
    calibration_data_folder: str = None
    check_samples: bool = False
    make_plots: bool = True
    save_embeddings: bool = False
    embeddings: list = None
    memory_efficient_attention: bool = None
    batch_seconds: float = None
    max_batch_size: int = None
    max_padding: float = None
    num_workers: int = 0

    @classmethod
    def from_hparams(cls, hparams):
        """The options named in a hyperparameter dict (other keys are ignored).

        Arguments
        ---------
        hparams : dict
            E.g. the loaded ``verification.yaml``.

        Returns
        -------
        VerificationOptions
        """
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hparams.items() if k in names})

    def embed_options(self):
        """The batching options that are set, as ``embed_files`` keyword arguments."""
        batching = ("batch_seconds", "max_batch_size", "max_padding", "num_workers")
        return {k: getattr(self, k) for k in batching if getattr(self, k) is not None}


def verify_trial_list(
    model,
    trials,
    data_folder,
    output_folder,
    options=None,
    progress=True,
    run_opts=None,
    **settings,
):
    """Verifies a VoxCeleb-format trial list end to end and writes the results.

    Arguments
    ---------
    model : W2VBertSpeakerRecognition or str or os.PathLike
        The model, or a folder to load it from (exported, training output or
        checkpoint folder; see ``speechbrain_w2vbert_sv.inference.interface.load_model``),
        loaded once the files are checked, and only if some file has no precomputed
        embedding (``options.embeddings``).
    trials : str or os.PathLike
        Trial list, ``label enroll test`` per line (gzip too).
    data_folder : str or os.PathLike
        Folder the trial list's paths are relative to.
    output_folder : str or os.PathLike
        Where scores, tables and plots go.
    options : VerificationOptions, optional
        Scoring, checking, output and batching settings.
    progress : bool
        Show progress bars.
    run_opts : dict, optional
        Run options (``device``, ``precision``) of a model loaded from a folder.
    **settings
        Fields of :class:`VerificationOptions` that replace those of ``options``.

    Returns
    -------
    dict
        System name -> metrics (``eer``, ``min_dcf@0.01``, ``min_dcf@0.05``, ...).
    """
    opts = dataclasses.replace(options or VerificationOptions(), **settings)
    output_folder = pathlib.Path(output_folder)
    name = opts.name or pathlib.Path(trials).name
    aux_root = os.fspath(opts.cohort_data_folder or data_folder)
    lists = [
        (
            os.fspath(trials),
            scoring.read_trials(trials, opts.enrollment_map),
            os.fspath(data_folder),
        )
    ]
    if opts.calibration_trials:
        calibration_root = os.fspath(opts.calibration_data_folder or data_folder)
        lists.append(
            (
                os.fspath(opts.calibration_trials),
                scoring.read_trials(opts.calibration_trials),
                calibration_root,
            )
        )
    file_lists = []
    if opts.mean_list:
        file_lists.append((f"mean list {opts.mean_list}", read_cohort(opts.mean_list, aux_root)[0]))
    speakers = None
    if opts.cohort_list:
        cohort_paths, speakers = read_cohort(opts.cohort_list, aux_root, opts.cohort_per_speaker)
        file_lists.append((f"cohort list {opts.cohort_list}", cohort_paths))
    durations = check_files(
        lists, file_lists, read_samples=opts.check_samples, num_workers=opts.num_workers
    )

    def embed(files):  # the model is loaded only if some file has no embedding yet
        nonlocal model
        if isinstance(model, (str, os.PathLike)):
            model = load_model(
                model, run_opts=run_opts, memory_efficient_attention=opts.memory_efficient_attention
            )
        elif opts.memory_efficient_attention is not None:
            model.use_memory_efficient_attention(opts.memory_efficient_attention)
        return model.encode_files(
            files, durations=durations, progress=progress, **opts.embed_options()
        )

    paths = list(durations)
    rows = embedding_rows(paths, opts.embeddings, embed)
    output_folder.mkdir(parents=True, exist_ok=True)
    if opts.save_embeddings:
        torch.save({"paths": paths, "embeddings": rows(paths)}, output_folder / "embeddings.pt")
    mean = scoring.mean_embedding(rows(file_lists[0][1])) if opts.mean_list else None
    cohort = None
    if opts.cohort_list:
        cohort = rows(cohort_paths)
        if speakers is not None:
            cohort = _speaker_means(cohort, speakers)

    scored = []
    for _, list_trials, root in lists:
        files = list_trials.files
        # One row per trial-list id: an enrollment model is the mean of its files'.
        matrix = scoring.trial_matrix(
            list_trials, rows([os.path.join(root, f) for f in files]), ids=files
        )
        seconds = [
            sum(durations[os.path.join(root, f)] for f in list_trials.members(u))
            for u in list_trials.utterances
        ]
        scored.append(
            (
                list_trials,
                *_score_list(list_trials, matrix, mean, cohort, opts.cohort_top_n, seconds),
            )
        )
    test_trials, systems, qualities = scored[0]
    if opts.calibration_trials:
        calib_trials, calib_systems, calib_qualities = scored[1]
        last = list(systems)[-1]
        calibrator = scoring.QMFCalibrator(num_features=1 + 2 * len(qualities))
        calibrator.fit(
            scoring.qmf_features(calib_systems[last], calib_trials, calib_qualities),
            calib_trials.labels,
        )
        systems["qmf"] = calibrator(scoring.qmf_features(systems[last], test_trials, qualities))

    labels = test_trials.labels
    results, details = {}, {}
    for system, scores in systems.items():
        scores = scores.double().numpy()
        scoring.write_scores(output_folder / f"scores_{system}.txt", test_trials, scores)
        results[f"{name} {system}"] = scoring.evaluate(scores, labels)
        details[system] = dict(
            results[f"{name} {system}"], eer_threshold=_eer_threshold(scores, labels)
        )
        if system == "qmf":
            details[system]["act_dcf@0.01"] = compute_act_dcf(scores, labels, 0.01)
            details[system]["cllr"] = compute_cllr(scores, labels)
        if opts.make_plots:
            plots.plot_score_histogram(
                output_folder / f"hist_{system}.png", scores, labels, title=f"{name} {system}"
            )
    table = scoring.write_results_table(output_folder / "results.md", results)
    if opts.make_plots:
        plots.plot_det(
            output_folder / "det.png",
            {s: (v.double().numpy(), labels) for s, v in systems.items()},
            title=name,
        )
    with open(output_folder / "results.json", "w", encoding="utf-8") as f:
        json.dump({"trials": os.fspath(trials), "systems": details}, f, indent=2)
    logger.info("Results of %s:\n%s", name, table)
    logger.info(
        "Cosine threshold at the EER: %.4f (a decision threshold for the exported model)",
        details["cosine"]["eer_threshold"],
    )
    return results
