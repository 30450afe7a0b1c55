"""Speaker verification metrics that scale to millions of trials.

Every metric is computed from the detection error trade-off (DET) curve, which
is built by sorting once and taking cumulative sums, so 10 M trials take about a
second instead of the quadratic loops of threshold sweeps.

Conventions (shared by all functions here):

- a trial is *accepted* when ``score >= threshold``;
- the operating points are the thresholds at each distinct score value plus
  ``+inf``: tied scores therefore move together (one step of the curve, which
  may change the miss and the false-alarm rate at the same time), and the
  curve runs from "accept all" (miss 0, false alarm 1) to "reject all"
  (miss 1, false alarm 0);
- the EER is where the piecewise-linear curve through these operating points
  (consecutive points joined by straight lines, no convex hull) crosses the
  line ``P_miss == P_fa``; on a tied step this is the point of that step where
  both rates are equal;
- minDCF is normalised: the minimum over the operating points of
  ``c_miss * p_target * P_miss + c_fa * (1 - p_target) * P_fa``, divided by
  ``min(c_miss * p_target, c_fa * (1 - p_target))`` (the cost of the best
  trivial system), so it lies in [0, 1].

Authors
 * speechbrain-w2vbert-sv contributors
"""

import math
from typing import NamedTuple

import numpy as np
import torch


class DETCurve(NamedTuple):
    """Operating points of a verification system, by increasing threshold.

    Attributes
    ----------
    p_miss : numpy.ndarray
        Miss rate (targets rejected) at each threshold, non-decreasing.
    p_fa : numpy.ndarray
        False-alarm rate (non-targets accepted), non-increasing.
    thresholds : numpy.ndarray
        The thresholds: a trial is accepted when ``score >= threshold``;
        the last one is ``+inf`` (reject all).
    """

    p_miss: np.ndarray
    p_fa: np.ndarray
    thresholds: np.ndarray

    def eer(self):
        """Equal error rate: where the curve crosses ``p_miss == p_fa``.

        Returns
        -------
        float
            The EER, linearly interpolated on the segment that crosses.
        """
        diff = self.p_miss - self.p_fa  # non-decreasing, from -1 to 1
        i = int(np.searchsorted(diff, 0.0, side="left"))
        if diff[i] == 0.0:
            return float(self.p_miss[i])
        # Crossing of the segment joining points i - 1 and i with the diagonal.
        alpha = -diff[i - 1] / (diff[i] - diff[i - 1])
        p_miss = self.p_miss
        return float(p_miss[i - 1] + alpha * (p_miss[i] - p_miss[i - 1]))

    def min_dcf(self, p_target=0.01, c_miss=1.0, c_fa=1.0):
        """Normalised minimum detection cost over the operating points.

        Arguments
        ---------
        p_target : float
            Prior probability of a target trial.
        c_miss : float
            Cost of a miss.
        c_fa : float
            Cost of a false alarm.

        Returns
        -------
        float
            minDCF divided by the cost of the best trivial decision.
        """
        _check_costs(p_target, c_miss, c_fa)
        cost = c_miss * p_target * self.p_miss + c_fa * (1.0 - p_target) * self.p_fa
        return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def _to_numpy(values, name):
    """Returns a 1-D numpy view of a numpy array, torch tensor or sequence."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.is_floating_point() and values.dtype not in (
            torch.float32,
            torch.float64,
        ):
            values = values.float()  # numpy has no bfloat16
        values = values.numpy()
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
    return values


def check_scores_labels(scores, labels):
    """Validates verification scores and labels and returns them as numpy.

    Arguments
    ---------
    scores : numpy.ndarray or torch.Tensor
        One score per trial, higher meaning "same speaker".
    labels : numpy.ndarray or torch.Tensor
        One label per trial: 1 (or True) for target, 0 for non-target.

    Returns
    -------
    scores : numpy.ndarray
        float32 or float64 scores (float64 for integer input).
    labels : numpy.ndarray
        bool labels.

    Raises
    ------
    ValueError
        When the lengths differ, a score is NaN, a label is not 0/1, or
        there are no targets or no non-targets.

    Example
    -------
    >>> s, y = check_scores_labels(torch.tensor([0.5, 0.1]), [1, 0])
    >>> s.dtype, y.tolist()
    (dtype('float32'), [True, False])
    >>> check_scores_labels([0.5, 0.1], [1, 1])
    Traceback (most recent call last):
    ...
    ValueError: labels contain no non-target trials (label 0); ...
    """
    scores = _to_numpy(scores, "scores")
    labels = _to_numpy(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels differ in length: {scores.shape[0]} scores, "
            f"{labels.shape[0]} labels"
        )
    if not np.issubdtype(scores.dtype, np.floating):
        if not np.issubdtype(scores.dtype, np.number):
            raise ValueError(f"scores must be numbers, got dtype {scores.dtype}")
        scores = scores.astype(np.float64)
    elif scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float32)
    n_nan = int(np.count_nonzero(np.isnan(scores)))
    if n_nan:
        raise ValueError(f"scores contain {n_nan} NaN value(s)")
    if labels.dtype != np.bool_:
        if not np.issubdtype(labels.dtype, np.number):
            raise ValueError(f"labels must be 0/1, got dtype {labels.dtype}")
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            raise ValueError(
                f"labels must be 0 (non-target) or 1 (target), found {labels[bad][0]!r}"
            )
        labels = labels == 1
    if not labels.any():
        raise ValueError(
            "labels contain no target trials (label 1); EER and DCF need both "
            "targets and non-targets"
        )
    if labels.all():
        raise ValueError(
            "labels contain no non-target trials (label 0); EER and DCF need "
            "both targets and non-targets"
        )
    return scores, labels


def _det_counts(scores, labels):
    """Error counts at every operating point (see the module conventions).

    Returns (n_miss, n_fa, thresholds, n_target, n_nontarget) with integer
    counts of length (number of distinct scores + 1).
    """
    scores, labels = check_scores_labels(scores, labels)
    n_target = int(np.count_nonzero(labels))
    targets = np.sort(scores[labels])
    nontargets = np.sort(scores[~labels])
    merged = np.concatenate([targets, nontargets])
    # Two sorted runs: a stable sort (timsort) merges them in linear time,
    # far cheaper than an argsort of the unsorted scores.
    order = np.argsort(merged, kind="stable")
    sorted_scores = merged[order]
    is_target = order < n_target
    # Last position of each group of equal scores: a tie is one step.
    ends = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
    ends = np.append(ends, sorted_scores.shape[0] - 1)
    targets_up_to = np.cumsum(is_target)[ends]
    nontargets_up_to = ends + 1 - targets_up_to
    n_nontarget = scores.shape[0] - n_target
    # Threshold k accepts scores >= the k-th distinct score; the first point
    # accepts everything, the last (+inf) rejects everything.
    n_miss = np.concatenate([[0], targets_up_to])
    n_fa = n_nontarget - np.concatenate([[0], nontargets_up_to])
    thresholds = np.append(sorted_scores[ends].astype(np.float64), np.inf)
    return n_miss, n_fa, thresholds, n_target, n_nontarget


def det_curve(scores, labels):
    """Miss and false-alarm rates at every distinct threshold.

    Arguments
    ---------
    scores : numpy.ndarray or torch.Tensor
        One score per trial, higher meaning "same speaker".
    labels : numpy.ndarray or torch.Tensor
        1 (or True) for target trials, 0 for non-target trials.

    Returns
    -------
    DETCurve
        ``(p_miss, p_fa, thresholds)``, one entry per distinct score plus the
        final "reject all" point at ``+inf``.

    Example
    -------
    >>> curve = det_curve([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1])
    >>> curve.p_miss.tolist(), curve.p_fa.tolist()
    ([0.0, 0.0, 0.5, 1.0], [1.0, 0.5, 0.0, 0.0])
    >>> curve.thresholds.tolist()
    [0.1, 0.5, 0.9, inf]
    >>> curve.eer(), curve.min_dcf(p_target=0.5)
    (0.25, 0.5)
    """
    n_miss, n_fa, thresholds, n_target, n_nontarget = _det_counts(scores, labels)
    return DETCurve(n_miss / n_target, n_fa / n_nontarget, thresholds)


def _check_costs(p_target, c_miss, c_fa):
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")


def compute_eer(scores, labels):
    """Equal error rate, interpolated where miss and false-alarm rates cross.

    See the module docstring for the exact definition (ties form one step).

    Arguments
    ---------
    scores : numpy.ndarray or torch.Tensor
        One score per trial, higher meaning "same speaker".
    labels : numpy.ndarray or torch.Tensor
        1 (or True) for target trials, 0 for non-target trials.

    Returns
    -------
    float
        The EER as a fraction in [0, 1].

    Example
    -------
    >>> compute_eer([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    0.0
    >>> compute_eer([0.9, 0.2, 0.3, 0.1], [1, 1, 0, 0])
    0.5
    >>> compute_eer([0.5, 0.5], [1, 0])  # one tied step from (0, 1) to (1, 0)
    0.5
    """
    return det_curve(scores, labels).eer()


def compute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised minimum detection cost function.

    Arguments
    ---------
    scores : numpy.ndarray or torch.Tensor
        One score per trial, higher meaning "same speaker".
    labels : numpy.ndarray or torch.Tensor
        1 (or True) for target trials, 0 for non-target trials.
    p_target : float
        Prior probability of a target trial.
    c_miss : float
        Cost of a miss.
    c_fa : float
        Cost of a false alarm.

    Returns
    -------
    float
        minDCF divided by the cost of the best trivial decision, in [0, 1].

    Example
    -------
    >>> compute_min_dcf([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    0.0
    >>> round(compute_min_dcf([0.9, 0.2, 0.3, 0.1], [1, 1, 0, 0], 0.5), 6)
    0.5
    """
    return det_curve(scores, labels).min_dcf(p_target, c_miss, c_fa)


def verification_metrics(scores, labels, p_targets=(0.01, 0.05), c_miss=1.0, c_fa=1.0):
    """EER and minDCF at several priors from a single sort.

    Arguments
    ---------
    scores : numpy.ndarray or torch.Tensor
        One score per trial, higher meaning "same speaker".
    labels : numpy.ndarray or torch.Tensor
        1 (or True) for target trials, 0 for non-target trials.
    p_targets : sequence of float
        Target priors at which minDCF is reported.
    c_miss : float
        Cost of a miss.
    c_fa : float
        Cost of a false alarm.

    Returns
    -------
    dict
        ``{"eer": ..., "min_dcf@<p>": ..., "n_target": ..., "n_nontarget": ...}``
        with ``<p>`` written as in ``f"{p:g}"``.

    Example
    -------
    >>> m = verification_metrics([0.9, 0.2, 0.3, 0.1], [1, 1, 0, 0], [0.5])
    >>> m["eer"], m["min_dcf@0.5"], m["n_target"]
    (0.5, 0.5, 2)
    """
    n_miss, n_fa, thresholds, n_target, n_nontarget = _det_counts(scores, labels)
    curve = DETCurve(n_miss / n_target, n_fa / n_nontarget, thresholds)
    metrics = {"eer": curve.eer()}
    for p_target in p_targets:
        metrics[f"min_dcf@{p_target:g}"] = curve.min_dcf(p_target, c_miss, c_fa)
    metrics["n_target"] = n_target
    metrics["n_nontarget"] = n_nontarget
    return metrics


def compute_act_dcf(llrs, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised actual DCF of calibrated log-likelihood-ratio scores.

    Decisions use the Bayes threshold ``log(c_fa (1 - p) / (c_miss p))``:
    a trial is accepted when its LLR is at least that threshold. Unlike
    minDCF this measures calibration as well as discrimination.

    Arguments
    ---------
    llrs : numpy.ndarray or torch.Tensor
        Log-likelihood ratios, one per trial.
    labels : numpy.ndarray or torch.Tensor
        1 (or True) for target trials, 0 for non-target trials.
    p_target : float
        Prior probability of a target trial.
    c_miss : float
        Cost of a miss.
    c_fa : float
        Cost of a false alarm.

    Returns
    -------
    float
        Actual DCF divided by the cost of the best trivial decision.

    Example
    -------
    >>> compute_act_dcf([5.0, 5.0, -5.0, -5.0], [1, 1, 0, 0])
    0.0
    >>> compute_act_dcf([5.0, 5.0, 5.0, -9.0], [1, 1, 0, 0])  # 1 FA of 2
    49.5
    """
    _check_costs(p_target, c_miss, c_fa)
    llrs, labels = check_scores_labels(llrs, labels)
    threshold = math.log(c_fa * (1.0 - p_target) / (c_miss * p_target))
    accept = llrs >= threshold
    p_miss = np.count_nonzero(~accept & labels) / np.count_nonzero(labels)
    p_fa = np.count_nonzero(accept & ~labels) / np.count_nonzero(~labels)
    cost = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    return float(cost / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def compute_cllr(llrs, labels):
    """Log-likelihood-ratio cost (Brümmer): calibration-sensitive, in bits.

    ``0.5 * (mean(log2(1 + exp(-llr_target))) + mean(log2(1 + exp(llr_nontarget))))``;
    1.0 is the cost of always answering LLR 0.

    Arguments
    ---------
    llrs : numpy.ndarray or torch.Tensor
        Log-likelihood ratios (natural log), one per trial.
    labels : numpy.ndarray or torch.Tensor
        1 (or True) for target trials, 0 for non-target trials.

    Returns
    -------
    float
        Cllr in bits.

    Example
    -------
    >>> compute_cllr([0.0, 0.0], [1, 0])
    1.0
    """
    llrs, labels = check_scores_labels(llrs, labels)
    llrs = llrs.astype(np.float64)
    target_cost = np.logaddexp(0.0, -llrs[labels]).mean()
    nontarget_cost = np.logaddexp(0.0, llrs[~labels]).mean()
    return float(0.5 * (target_cost + nontarget_cost) / math.log(2.0))
