"""Verification scoring at VoxCeleb scale: trial lists, cosine scoring,
adaptive s-norm, quality-aware calibration (QMF) and result files.

Everything works on whole trial lists at once: utterances are embedded and
normalised once, trials are scored by gathering rows of an utterance matrix,
and the cohort statistics of adaptive s-norm are computed once per utterance
with a chunked matrix product (not once per trial), so Vox1-E/H lists take
seconds.

Authors
 * speechbrain-w2vbert-sv contributors
"""

import gzip
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from speechbrain_w2vbert_sv.metrics import verification_metrics

_GZIP_MAGIC = b"\x1f\x8b"


def _open_text(path):
    """Opens a text file for reading, decompressing it when it is gzip."""
    with open(path, "rb") as f:
        compressed = f.read(2) == _GZIP_MAGIC
    if compressed:
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


@dataclass(frozen=True, eq=False)
class Trials:
    """A verification trial list, with utterances indexed once.

    Attributes
    ----------
    labels : numpy.ndarray
        [T] int8, 1 for a target (same speaker) trial, 0 otherwise.
    enroll_index : numpy.ndarray
        [T] int64 row of each trial's enrollment utterance in ``utterances``.
    test_index : numpy.ndarray
        [T] int64 row of each trial's test utterance in ``utterances``.
    utterances : tuple of str
        The sorted distinct utterance ids (as written in the list, e.g.
        ``id10270/x6uYqmx31kE/00001.wav``).
    source : str
        Where the list was read from (for messages).

    Example
    -------
    >>> trials = Trials.from_lists([1, 0], ["a.wav", "a.wav"], ["b.wav", "c.wav"])
    >>> len(trials), trials.utterances, trials.test_ids
    (2, ('a.wav', 'b.wav', 'c.wav'), ['b.wav', 'c.wav'])
    >>> trials.paths("/data/wav")[0]
    '/data/wav/a.wav'
    """

    labels: np.ndarray
    enroll_index: np.ndarray
    test_index: np.ndarray
    utterances: tuple
    source: str = "<memory>"

    @classmethod
    def from_lists(cls, labels, enroll_ids, test_ids, source="<memory>"):
        """Builds a trial list from parallel sequences of labels and ids.

        Arguments
        ---------
        labels : sequence of int
            0/1 label of each trial.
        enroll_ids : sequence of str
            Enrollment utterance of each trial.
        test_ids : sequence of str
            Test utterance of each trial.
        source : str
            Name used in messages.

        Returns
        -------
        Trials
        """
        if not len(labels) == len(enroll_ids) == len(test_ids):
            raise ValueError(
                f"{source}: labels, enroll_ids and test_ids differ in length "
                f"({len(labels)}, {len(enroll_ids)}, {len(test_ids)})"
            )
        if len(labels) == 0:
            raise ValueError(f"{source}: the trial list is empty")
        labels = np.asarray(labels, dtype=np.int8)
        if ((labels != 0) & (labels != 1)).any():
            raise ValueError(f"{source}: labels must be 0 or 1")
        utterances = tuple(sorted(set(enroll_ids).union(test_ids)))
        row = {utt: i for i, utt in enumerate(utterances)}
        count = len(labels)
        enroll_index = np.fromiter(map(row.__getitem__, enroll_ids), np.int64, count)
        test_index = np.fromiter(map(row.__getitem__, test_ids), np.int64, count)
        return cls(labels, enroll_index, test_index, utterances, str(source))

    def __len__(self):
        return int(self.labels.shape[0])

    @property
    def enroll_ids(self):
        """The enrollment id of every trial (a list of str)."""
        return [self.utterances[i] for i in self.enroll_index]

    @property
    def test_ids(self):
        """The test id of every trial (a list of str)."""
        return [self.utterances[i] for i in self.test_index]

    def paths(self, root):
        """The utterances as paths under ``root`` (the dataset's wav folder)."""
        return [os.path.join(root, utt) for utt in self.utterances]


def read_trials(path):
    """Reads a VoxCeleb-format trial list: ``<label> <enroll> <test>`` per line.

    Labels are 1 (same speaker) or 0; blank lines are skipped; the file may
    be gzip-compressed (detected from its content, e.g. ``list_test_all.txt.gz``).

    Arguments
    ---------
    path : str or os.PathLike
        The trial list.

    Returns
    -------
    Trials
        Labels, enroll/test indices and the sorted distinct utterances.

    Raises
    ------
    ValueError
        For a malformed line (naming the file and the line number) or an
        empty list.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("1 a/1.wav b/1.wav\\n0 a/1.wav c/2.wav\\n")
    >>> trials = read_trials(f.name)
    >>> trials.labels.tolist(), trials.enroll_ids, len(trials.utterances)
    ([1, 0], ['a/1.wav', 'a/1.wav'], 3)
    >>> os.remove(f.name)
    """
    labels, enroll_ids, test_ids = [], [], []
    with _open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3 or fields[0] not in ("0", "1"):
                raise ValueError(
                    f"{path}, line {line_number}: expected "
                    f"'<label 0|1> <enroll> <test>', got {line.rstrip()!r}"
                )
            labels.append(fields[0] == "1")
            enroll_ids.append(fields[1])
            test_ids.append(fields[2])
    return Trials.from_lists(labels, enroll_ids, test_ids, source=path)


def _as_matrix(values, name):
    """A float32 [N, D] tensor from an array, tensor or dict of vectors."""
    if isinstance(values, Mapping):
        if not values:
            raise ValueError(f"{name} is empty")
        values = [torch.as_tensor(v).reshape(-1) for v in values.values()]
        matrix = torch.stack(values)
    else:
        matrix = torch.as_tensor(values)
        if matrix.dim() == 3 and matrix.shape[1] == 1:
            matrix = matrix.squeeze(1)  # SpeechBrain's [N, 1, D] embeddings
    if matrix.dim() != 2 or matrix.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty [N, D] matrix, got shape "
            f"{tuple(matrix.shape)}"
        )
    return matrix.float()


def embedding_matrix(embeddings, keys, ids=None):
    """Rows of an embedding table for the given utterance ids, in order.

    Arguments
    ---------
    embeddings : dict or numpy.ndarray or torch.Tensor
        Either a dict ``id -> vector`` (vectors of any shape holding D values,
        e.g. SpeechBrain's [1, D]) or an [N, D] matrix whose rows are named
        by ``ids``.
    keys : sequence of str
        The utterances wanted (e.g. ``trials.utterances``).
    ids : sequence of str, optional
        Row names of a matrix ``embeddings``; not used with a dict.

    Returns
    -------
    torch.Tensor
        [len(keys), D] float32.

    Example
    -------
    >>> table = {"a": torch.ones(1, 2), "b": torch.zeros(1, 2)}
    >>> embedding_matrix(table, ["b", "a"]).tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    >>> embedding_matrix(torch.eye(2), ["y"], ids=["x", "y"]).tolist()
    [[0.0, 1.0]]
    """
    if isinstance(embeddings, Mapping):
        if ids is not None:
            raise ValueError("ids must not be given with a dict of embeddings")
        missing = [k for k in keys if k not in embeddings]
        if missing:
            raise ValueError(_missing_message(missing))
        return _as_matrix({k: embeddings[k] for k in keys}, "embeddings")
    matrix = _as_matrix(embeddings, "embeddings")
    if ids is None:
        raise ValueError("ids (one per row) are required with an embedding matrix")
    if len(ids) != matrix.shape[0]:
        raise ValueError(
            f"embedding matrix has {matrix.shape[0]} rows but {len(ids)} ids"
        )
    row = {utt: i for i, utt in enumerate(ids)}
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(_missing_message(missing))
    return matrix[torch.as_tensor([row[k] for k in keys], dtype=torch.long)]


def _missing_message(missing, what="embedding"):
    shown = ", ".join(repr(k) for k in missing[:3])
    return f"{len(missing)} utterance(s) have no {what}, e.g. {shown}"


def mean_embedding(embeddings):
    """The mean of a set of embeddings (e.g. a training or cohort set).

    Arguments
    ---------
    embeddings : dict or numpy.ndarray or torch.Tensor
        A dict ``id -> vector`` or an [N, D] matrix.

    Returns
    -------
    torch.Tensor
        [D] float32.

    Example
    -------
    >>> mean_embedding(torch.tensor([[1.0, 0.0], [3.0, 2.0]])).tolist()
    [2.0, 1.0]
    """
    return _as_matrix(embeddings, "embeddings").mean(dim=0)


def _normalise(matrix, mean):
    """Subtracts the mean embedding (if any) and projects to the unit sphere."""
    if mean is not None:
        mean = torch.as_tensor(mean, dtype=matrix.dtype).reshape(-1)
        if mean.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"mean has {mean.shape[0]} values, embeddings have "
                f"{matrix.shape[1]} dimensions"
            )
        matrix = matrix - mean
    return torch.nn.functional.normalize(matrix, dim=1)


def _gather_dot(normalised, first, second, chunk_size):
    """Dot products of rows ``first[i]`` and ``second[i]``, chunked over trials."""
    first = torch.as_tensor(first, dtype=torch.long)
    second = torch.as_tensor(second, dtype=torch.long)
    out = torch.empty(first.shape[0], dtype=normalised.dtype)
    for start in range(0, first.shape[0], chunk_size):
        stop = start + chunk_size
        rows_a = normalised[first[start:stop]]
        rows_b = normalised[second[start:stop]]
        out[start:stop] = (rows_a * rows_b).sum(dim=1)
    return out


def cosine_scores(trials, embeddings, ids=None, mean=None, chunk_size=65536):
    """Cosine similarity of every trial.

    Arguments
    ---------
    trials : Trials
        The trial list.
    embeddings : dict or numpy.ndarray or torch.Tensor
        The embedding table (see ``embedding_matrix``).
    ids : sequence of str, optional
        Row names when ``embeddings`` is a matrix.
    mean : torch.Tensor, optional
        [D] mean embedding subtracted before the cosine (see
        ``mean_embedding``); None to score the raw embeddings.
    chunk_size : int
        Trials scored per step (bounds the memory of the gathered rows).

    Returns
    -------
    torch.Tensor
        [T] float32 scores in [-1, 1].

    Example
    -------
    >>> trials = Trials.from_lists([1, 0], ["a", "a"], ["b", "c"])
    >>> table = {"a": [1.0, 0.0], "b": [2.0, 0.0], "c": [0.0, 3.0]}
    >>> cosine_scores(trials, table).tolist()
    [1.0, 0.0]
    """
    matrix = embedding_matrix(embeddings, trials.utterances, ids)
    normalised = _normalise(matrix, mean)
    return _gather_dot(
        normalised, trials.enroll_index, trials.test_index, chunk_size
    )


def cohort_statistics(embeddings, cohort, top_n=300, mean=None, chunk_size=1024):
    """Mean and standard deviation of each utterance's top-N cohort scores.

    Each utterance is scored against the whole cohort by a matrix product
    ([chunk, D] x [D, C], chunked over utterances to bound memory), and the
    ``top_n`` highest cosine scores give its statistics. The standard
    deviation uses Bessel's correction (as ``torch.std``).

    Arguments
    ---------
    embeddings : numpy.ndarray or torch.Tensor or dict
        [U, D] utterance embeddings (a dict is taken in its order).
    cohort : numpy.ndarray or torch.Tensor or dict
        [C, D] cohort embeddings (e.g. one per training speaker or utterance).
    top_n : int
        Number of closest cohort scores kept (adaptive s-norm); capped at C.
    mean : torch.Tensor, optional
        [D] mean embedding subtracted from both sides before the cosine.
    chunk_size : int
        Utterances scored per matrix product.

    Returns
    -------
    mean_scores : torch.Tensor
        [U] float32.
    std_scores : torch.Tensor
        [U] float32.

    Example
    -------
    >>> mu, sd = cohort_statistics(torch.randn(5, 8), torch.randn(20, 8), top_n=4)
    >>> mu.shape, bool((sd > 0).all())
    (torch.Size([5]), True)
    """
    utterances = _normalise(_as_matrix(embeddings, "embeddings"), mean)
    cohort = _normalise(_as_matrix(cohort, "cohort"), mean)
    if cohort.shape[1] != utterances.shape[1]:
        raise ValueError(
            f"cohort has {cohort.shape[1]} dimensions, embeddings have "
            f"{utterances.shape[1]}"
        )
    top_n = min(int(top_n), cohort.shape[0])
    if top_n < 2:
        raise ValueError(
            f"adaptive s-norm needs at least 2 cohort scores, got top_n={top_n} "
            f"with a cohort of {cohort.shape[0]}"
        )
    cohort_t = cohort.T.contiguous()
    mean_scores = torch.empty(utterances.shape[0])
    std_scores = torch.empty(utterances.shape[0])
    for start in range(0, utterances.shape[0], chunk_size):
        scores = utterances[start : start + chunk_size] @ cohort_t
        # Order within the top-N does not matter for mean and std.
        top = scores.topk(top_n, dim=1, sorted=False).values
        std, mean_ = torch.std_mean(top, dim=1)
        mean_scores[start : start + chunk_size] = mean_
        std_scores[start : start + chunk_size] = std
    flat = int((std_scores == 0).sum())
    if flat:
        raise ValueError(
            f"the top-{top_n} cohort scores of {flat} utterance(s) are all equal "
            "(zero spread): the cohort needs distinct embeddings"
        )
    return mean_scores, std_scores


def snorm(scores, enroll_index, test_index, mean_scores, std_scores):
    """Symmetric normalisation of trial scores with per-utterance statistics.

    ``0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)``.

    Arguments
    ---------
    scores : torch.Tensor
        [T] raw trial scores.
    enroll_index : array-like
        [T] row of each trial's enrollment utterance in the statistics.
    test_index : array-like
        [T] row of each trial's test utterance.
    mean_scores : torch.Tensor
        [U] cohort score means (see ``cohort_statistics``).
    std_scores : torch.Tensor
        [U] cohort score standard deviations.

    Returns
    -------
    torch.Tensor
        [T] normalised scores.

    Example
    -------
    >>> snorm(torch.tensor([1.0]), [0], [1], torch.tensor([0.0, 0.5]),
    ...       torch.tensor([1.0, 0.5])).tolist()
    [1.0]
    """
    scores = torch.as_tensor(scores)
    enroll_index = torch.as_tensor(enroll_index, dtype=torch.long)
    test_index = torch.as_tensor(test_index, dtype=torch.long)
    z_enroll = (scores - mean_scores[enroll_index]) / std_scores[enroll_index]
    z_test = (scores - mean_scores[test_index]) / std_scores[test_index]
    return 0.5 * (z_enroll + z_test)


def adaptive_snorm(
    scores,
    trials,
    embeddings,
    cohort,
    ids=None,
    mean=None,
    top_n=300,
    chunk_size=1024,
    return_statistics=False,
):
    """Adaptive s-norm of a scored trial list (top-N cohort per utterance).

    The cohort statistics are computed once per distinct utterance of the
    list, then every trial is normalised with those of its two utterances.

    Arguments
    ---------
    scores : torch.Tensor
        [T] cosine scores of ``trials`` (see ``cosine_scores``).
    trials : Trials
        The trial list.
    embeddings : dict or numpy.ndarray or torch.Tensor
        The embedding table (see ``embedding_matrix``).
    cohort : dict or numpy.ndarray or torch.Tensor
        [C, D] cohort embeddings, disjoint from the evaluation speakers.
    ids : sequence of str, optional
        Row names when ``embeddings`` is a matrix.
    mean : torch.Tensor, optional
        The mean embedding used for the scores (applied to the cohort too).
    top_n : int
        Cohort scores kept per utterance (300 by default).
    chunk_size : int
        Utterances per cohort matrix product.
    return_statistics : bool
        Also return the [U] cohort means and standard deviations (aligned
        with ``trials.utterances``), e.g. as QMF quality measures.

    Returns
    -------
    torch.Tensor
        [T] normalised scores (and ``(mean_scores, std_scores)`` when
        ``return_statistics``).

    Example
    -------
    >>> trials = Trials.from_lists([1, 0], ["a", "a"], ["b", "c"])
    >>> table = {k: torch.randn(8) for k in "abc"}
    >>> raw = cosine_scores(trials, table)
    >>> adaptive_snorm(raw, trials, table, torch.randn(30, 8), top_n=10).shape
    torch.Size([2])
    """
    scores = torch.as_tensor(scores)
    if scores.shape != (len(trials),):
        raise ValueError(
            f"scores has shape {tuple(scores.shape)}, expected one score per "
            f"trial of {trials.source} ({len(trials)})"
        )
    matrix = embedding_matrix(embeddings, trials.utterances, ids)
    mean_scores, std_scores = cohort_statistics(
        matrix, cohort, top_n=top_n, mean=mean, chunk_size=chunk_size
    )
    normalised = snorm(
        scores, trials.enroll_index, trials.test_index, mean_scores, std_scores
    )
    if return_statistics:
        return normalised, (mean_scores, std_scores)
    return normalised


def quality_measures(
    trials, embeddings, ids=None, durations=None, cohort_mean=None
):
    """Per-utterance quality measures for QMF calibration.

    The measures chosen here, all known to shift the score distributions of
    speaker verification: the log duration of the utterance in seconds
    (short utterances give less reliable embeddings), the L2 norm of the raw
    embedding (low for noisy or atypical input), and, when given, the mean of
    the utterance's top-N cohort scores from adaptive s-norm (how "generic" the
    voice is).

    Arguments
    ---------
    trials : Trials
        The trial list whose utterances are described.
    embeddings : dict or numpy.ndarray or torch.Tensor
        The raw embedding table (see ``embedding_matrix``).
    ids : sequence of str, optional
        Row names when ``embeddings`` is a matrix.
    durations : dict or array-like, optional
        Seconds per utterance: a dict ``id -> seconds`` or values aligned
        with ``trials.utterances``.
    cohort_mean : array-like, optional
        [U] cohort score means aligned with ``trials.utterances``.

    Returns
    -------
    dict
        ``name -> [U] float64 tensor`` aligned with ``trials.utterances``.

    Example
    -------
    >>> trials = Trials.from_lists([1], ["a"], ["b"])
    >>> q = quality_measures(trials, {"a": [3.0, 4.0], "b": [0.0, 1.0]},
    ...                      durations={"a": 1.0, "b": math.e})
    >>> {k: v.tolist() for k, v in q.items()}
    {'log_duration': [0.0, 1.0], 'embedding_norm': [5.0, 1.0]}
    """
    measures = {}
    if durations is not None:
        seconds = _per_utterance(durations, trials, "durations")
        if (seconds <= 0).any():
            raise ValueError("durations must be positive (seconds)")
        measures["log_duration"] = seconds.log()
    matrix = embedding_matrix(embeddings, trials.utterances, ids)
    measures["embedding_norm"] = matrix.double().norm(dim=1)
    if cohort_mean is not None:
        measures["cohort_mean"] = _per_utterance(cohort_mean, trials, "cohort_mean")
    return measures


def _per_utterance(values, trials, name):
    """[U] float64 tensor aligned with trials.utterances from a dict or array."""
    if isinstance(values, Mapping):
        missing = [u for u in trials.utterances if u not in values]
        if missing:
            raise ValueError(f"{name}: " + _missing_message(missing, "value"))
        values = [values[u] for u in trials.utterances]
    values = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if values.shape != (len(trials.utterances),):
        raise ValueError(
            f"{name} has shape {tuple(values.shape)}, expected one value per "
            f"utterance ({len(trials.utterances)})"
        )
    return values


def qmf_features(scores, trials, qualities):
    """Trial features for QMF: the score, then min and max of each quality.

    Taking the minimum and the maximum of the enrollment and test values makes
    the features independent of which side is the enrollment (the roles are
    arbitrary in VoxCeleb lists), while keeping the weaker side visible.

    Arguments
    ---------
    scores : torch.Tensor
        [T] trial scores (raw or s-normed).
    trials : Trials
        The trial list.
    qualities : dict
        ``name -> [U] values`` aligned with ``trials.utterances`` (see
        ``quality_measures``), or ``name -> dict id -> value``.

    Returns
    -------
    torch.Tensor
        [T, 1 + 2 * len(qualities)] float64, columns ``score, min(q1),
        max(q1), min(q2), ...`` in the order of ``qualities``.

    Example
    -------
    >>> trials = Trials.from_lists([1, 0], ["a", "a"], ["b", "c"])
    >>> qmf_features(torch.tensor([0.5, 0.25]), trials,
    ...              {"q": [1.0, 2.0, 0.0]}).tolist()
    [[0.5, 1.0, 2.0], [0.25, 0.0, 1.0]]
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.shape != (len(trials),):
        raise ValueError(
            f"scores has shape {tuple(scores.shape)}, expected one score per "
            f"trial of {trials.source} ({len(trials)})"
        )
    enroll = torch.as_tensor(trials.enroll_index)
    test = torch.as_tensor(trials.test_index)
    columns = [scores]
    for name, values in qualities.items():
        values = _per_utterance(values, trials, name)
        columns.append(torch.minimum(values[enroll], values[test]))
        columns.append(torch.maximum(values[enroll], values[test]))
    return torch.stack(columns, dim=1)


class QMFCalibrator(torch.nn.Module):
    """Quality measure function calibration: logistic regression to LLRs.

    Maps trial features (see ``qmf_features``) to calibrated log-likelihood
    ratios ``llr = w . standardise(x) + b``. The fit minimises the
    prior-weighted cross-entropy (Brümmer's Cllr objective at ``prior``):
    target and non-target trials weigh ``prior`` and ``1 - prior`` in total,
    the posterior logit being ``llr + logit(prior)``; a small L2 penalty on
    ``w`` keeps the solution finite on separable data. It is solved by
    Newton's method in float64 (the problem is convex and has few parameters).

    Arguments
    ---------
    num_features : int
        Number of feature columns (``1 + 2 * number of quality measures``).
    prior : float
        Effective target prior of the training objective.
    l2 : float
        L2 penalty on the weights (features are standardised first).
    max_iter : int
        Maximum Newton iterations.

    Example
    -------
    >>> gen = torch.Generator().manual_seed(0)
    >>> labels = torch.arange(200) % 2
    >>> scores = labels * 2.0 + torch.randn(200, generator=gen)
    >>> calibrator = QMFCalibrator(num_features=1).fit(scores[:, None], labels)
    >>> llr = calibrator(scores[:, None])
    >>> llr.shape, bool(llr[labels == 1].mean() > 0 > llr[labels == 0].mean())
    (torch.Size([200]), True)
    """

    def __init__(self, num_features, prior=0.5, l2=1e-4, max_iter=100):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {prior}")
        self.num_features = int(num_features)
        self.prior = float(prior)
        self.l2 = float(l2)
        self.max_iter = int(max_iter)
        dtype = torch.float64
        self.register_buffer("feature_mean", torch.zeros(num_features, dtype=dtype))
        self.register_buffer("feature_std", torch.ones(num_features, dtype=dtype))
        self.register_buffer("weight", torch.zeros(num_features, dtype=dtype))
        self.register_buffer("bias", torch.zeros((), dtype=dtype))

    def _check_features(self, features):
        features = torch.as_tensor(features, dtype=torch.float64)
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"features must have shape [T, {self.num_features}], got "
                f"{tuple(features.shape)}"
            )
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN or infinite values")
        return features

    def fit(self, features, labels):
        """Fits the calibration on a trial list with known labels.

        Arguments
        ---------
        features : torch.Tensor
            [T, num_features] trial features.
        labels : array-like
            [T] 0/1 labels.

        Returns
        -------
        QMFCalibrator
            ``self``, fitted.
        """
        features = self._check_features(features)
        labels = torch.as_tensor(np.asarray(labels)).reshape(-1)
        if labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"{features.shape[0]} feature rows but {labels.shape[0]} labels"
            )
        targets = labels == 1
        n_target = int(targets.sum())
        if n_target == 0 or n_target == labels.shape[0]:
            raise ValueError("calibration needs both target and non-target trials")
        mean = features.mean(dim=0)
        std = features.std(dim=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        design = torch.cat(
            [(features - mean) / std, torch.ones(features.shape[0], 1, dtype=torch.float64)],
            dim=1,
        )
        y = targets.double()
        trial_weight = torch.where(
            targets,
            torch.tensor(self.prior / n_target, dtype=torch.float64),
            torch.tensor((1 - self.prior) / (labels.shape[0] - n_target), dtype=torch.float64),
        )
        offset = math.log(self.prior / (1 - self.prior))
        penalty = torch.full((design.shape[1],), self.l2, dtype=torch.float64)
        penalty[-1] = 0.0  # the bias is not penalised

        def objective(params):
            logits = design @ params + offset
            # softplus(-z) for targets, softplus(z) for non-targets
            losses = torch.nn.functional.softplus(torch.where(targets, -logits, logits))
            return (trial_weight * losses).sum() + 0.5 * (penalty * params**2).sum()

        params = torch.zeros(design.shape[1], dtype=torch.float64)
        loss = objective(params)
        for _ in range(self.max_iter):
            prob = torch.sigmoid(design @ params + offset)
            grad = design.T @ (trial_weight * (prob - y)) + penalty * params
            if float(grad.abs().max()) < 1e-12:
                break
            hessian = (design.T * (trial_weight * prob * (1 - prob))) @ design
            step = torch.linalg.solve(hessian + torch.diag(penalty + 1e-12), grad)
            # Backtracking keeps Newton monotone far from the optimum.
            scale = 1.0
            candidate = params - step
            new_loss = objective(candidate)
            while new_loss > loss and scale > 1e-8:
                scale *= 0.5
                candidate = params - scale * step
                new_loss = objective(candidate)
            if new_loss > loss:
                break
            converged = float(loss - new_loss) <= 1e-15 * float(loss)
            params, loss = candidate, new_loss
            if converged:
                break
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)
        self.weight.copy_(params[:-1])
        self.bias.copy_(params[-1])
        return self

    def forward(self, features):
        """Calibrated log-likelihood ratios.

        Arguments
        ---------
        features : torch.Tensor
            [T, num_features] trial features.

        Returns
        -------
        torch.Tensor
            [T] float64 LLRs (natural log).
        """
        features = self._check_features(features)
        standardised = (features - self.feature_mean) / self.feature_std
        return standardised @ self.weight + self.bias


def write_scores(path, trials, scores):
    """Writes ``<enroll> <test> <score> <label>`` per trial.

    Scores are written with 9 significant digits (exact for float32).

    Arguments
    ---------
    path : str or os.PathLike
        Output file.
    trials : Trials
        The trial list.
    scores : array-like
        [T] scores.

    Example
    -------
    >>> import tempfile
    >>> trials = Trials.from_lists([1], ["a.wav"], ["b.wav"])
    >>> path = os.path.join(tempfile.mkdtemp(), "scores.txt")
    >>> write_scores(path, trials, [0.25])
    >>> open(path).read()
    'a.wav b.wav 0.25 1\\n'
    """
    scores = np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=np.float64)
    if scores.shape != (len(trials),):
        raise ValueError(
            f"scores has shape {scores.shape}, expected one score per trial of "
            f"{trials.source} ({len(trials)})"
        )
    utts = trials.utterances
    lines = [
        f"{utts[e]} {utts[t]} {s:.9g} {y}\n"
        for e, t, s, y in zip(
            trials.enroll_index.tolist(),
            trials.test_index.tolist(),
            scores.tolist(),
            trials.labels.tolist(),
        )
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


def read_scores(path):
    """Reads a scores file written by ``write_scores``.

    Arguments
    ---------
    path : str or os.PathLike
        The scores file (``<enroll> <test> <score> <label>`` per line).

    Returns
    -------
    trials : Trials
        The trials (labels and utterances).
    scores : numpy.ndarray
        [T] float64 scores.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "scores.txt")
    >>> write_scores(path, Trials.from_lists([0], ["a"], ["b"]), [-0.5])
    >>> trials, scores = read_scores(path)
    >>> trials.labels.tolist(), scores.tolist()
    ([0], [-0.5])
    """
    labels, enroll_ids, test_ids, scores = [], [], [], []
    with _open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 4 or fields[3] not in ("0", "1"):
                    raise ValueError
                score = float(fields[2])
            except ValueError:
                raise ValueError(
                    f"{path}, line {line_number}: expected "
                    f"'<enroll> <test> <score> <label 0|1>', got {line.rstrip()!r}"
                ) from None
            enroll_ids.append(fields[0])
            test_ids.append(fields[1])
            scores.append(score)
            labels.append(fields[3] == "1")
    trials = Trials.from_lists(labels, enroll_ids, test_ids, source=path)
    return trials, np.asarray(scores, dtype=np.float64)


RESULT_PRIORS = (0.01, 0.05)


def evaluate(scores, labels):
    """The figures of a results table: EER and minDCF at 0.01 and 0.05.

    Arguments
    ---------
    scores : array-like
        [T] scores.
    labels : array-like
        [T] 0/1 labels.

    Returns
    -------
    dict
        ``eer``, ``min_dcf@0.01``, ``min_dcf@0.05``, ``n_target``,
        ``n_nontarget`` (see ``metrics.verification_metrics``).

    Example
    -------
    >>> evaluate([0.9, 0.1], [1, 0])["eer"]
    0.0
    """
    return verification_metrics(scores, labels, p_targets=RESULT_PRIORS)


def format_results_table(results):
    """A Markdown table of verification results.

    Arguments
    ---------
    results : dict
        ``row name -> dict`` as returned by ``evaluate``.

    Returns
    -------
    str
        The table, one row per entry, EER in percent.

    Example
    -------
    >>> print(format_results_table({"Vox1-O": evaluate([0.9, 0.1], [1, 0])}))
    | list | targets/non-targets | EER (%) | minDCF (0.01) | minDCF (0.05) |
    |---|---|---|---|---|
    | Vox1-O | 1/1 | 0.000 | 0.0000 | 0.0000 |
    """
    header = ["list", "targets/non-targets", "EER (%)"] + [
        f"minDCF ({p:g})" for p in RESULT_PRIORS
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, row in results.items():
        cells = [
            str(name),
            f"{row['n_target']}/{row['n_nontarget']}",
            f"{100 * row['eer']:.3f}",
        ] + [f"{row[f'min_dcf@{p:g}']:.4f}" for p in RESULT_PRIORS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results_table(path, results):
    """Writes ``format_results_table(results)`` to ``path`` and returns it.

    Arguments
    ---------
    path : str or os.PathLike
        Output file (Markdown).
    results : dict
        ``row name -> dict`` as returned by ``evaluate``.

    Returns
    -------
    str
        The table written.
    """
    table = format_results_table(results)
    with open(path, "w", encoding="utf-8") as f:
        f.write(table + "\n")
    return table
