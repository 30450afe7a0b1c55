"""Quality-aware calibration (QMF): quality measures and a logistic calibrator."""

import math
from collections.abc import Mapping

import numpy as np
import torch

from speechbrain_w2vbert_sv.scoring.cosine import missing_message, trial_matrix


def quality_measures(trials, embeddings, ids=None, durations=None, cohort_mean=None):
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
    >>> from speechbrain_w2vbert_sv.scoring.trials import Trials
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
    matrix = trial_matrix(trials, embeddings, ids)
    measures["embedding_norm"] = matrix.double().norm(dim=1)
    if cohort_mean is not None:
        measures["cohort_mean"] = _per_utterance(cohort_mean, trials, "cohort_mean")
    return measures


def _per_utterance(values, trials, name):
    """[U] float64 tensor aligned with trials.utterances from a dict or array."""
    if isinstance(values, Mapping):
        missing = [u for u in trials.utterances if u not in values]
        if missing:
            raise ValueError(f"{name}: " + missing_message(missing, "value"))
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
    >>> from speechbrain_w2vbert_sv.scoring.trials import Trials
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
                f"features must have shape [T, {self.num_features}], got {tuple(features.shape)}"
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
            raise ValueError(f"{features.shape[0]} feature rows but {labels.shape[0]} labels")
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
