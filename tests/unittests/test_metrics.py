"""EER, minDCF and DET curve against brute-force threshold sweeps."""

import math

import numpy as np
import pytest
import torch

from speechbrain_w2vbert_sv.scoring.metrics import (
    compute_act_dcf,
    compute_cllr,
    compute_eer,
    compute_min_dcf,
    det_curve,
    verification_metrics,
)


def brute_force_points(scores, labels):
    """Rates at every threshold, one loop iteration per threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    targets, nontargets = scores[labels], scores[~labels]
    points = []
    for threshold in list(np.unique(scores)) + [np.inf]:
        p_miss = np.mean(targets < threshold)  # accepted when score >= threshold
        p_fa = np.mean(nontargets >= threshold)
        points.append((p_miss, p_fa))
    return points


def brute_force_eer(scores, labels):
    """Crossing of the diagonal, segment by segment."""
    points = brute_force_points(scores, labels)
    for (m0, f0), (m1, f1) in zip(points[:-1], points[1:]):
        if m0 == f0:
            return m0
        if (m0 - f0) < 0 < (m1 - f1):
            # m0 + a (m1 - m0) == f0 + a (f1 - f0)
            a = (f0 - m0) / ((m1 - m0) - (f1 - f0))
            return m0 + a * (m1 - m0)
    return points[-1][0]


def brute_force_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    costs = [
        c_miss * p_target * m + c_fa * (1 - p_target) * f
        for m, f in brute_force_points(scores, labels)
    ]
    return min(costs) / min(c_miss * p_target, c_fa * (1 - p_target))


def realistic_scores(rng, n):
    """Cosine-like float32 scores: targets around 0.6, non-targets around 0."""
    labels = rng.random(n) < 0.3
    scores = np.where(labels, rng.normal(0.6, 0.15, n), rng.normal(0.02, 0.1, n)).clip(-1, 1)
    return scores.astype(np.float32), labels


CASES = {
    "continuous": lambda rng: (rng.normal(size=300), rng.random(300) < 0.5),
    "heavy ties": lambda rng: (rng.integers(0, 6, 400).astype(float), rng.random(400) < 0.4),
    "ties across classes": lambda rng: (np.round(rng.normal(size=500), 1), rng.random(500) < 0.5),
    "realistic float32": lambda rng: realistic_scores(rng, 2000),
    "few targets": lambda rng: (rng.normal(size=200), np.arange(200) < 3),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_brute_force(case, seed):
    rng = np.random.default_rng(seed)
    scores, labels = CASES[case](rng)
    if case != "few targets":
        scores = scores + 0.8 * labels  # some separation
    assert compute_eer(scores, labels) == pytest.approx(brute_force_eer(scores, labels), abs=1e-9)
    for p_target, c_miss, c_fa in [(0.01, 1, 1), (0.05, 1, 1), (0.3, 2, 1)]:
        assert compute_min_dcf(scores, labels, p_target, c_miss, c_fa) == (
            pytest.approx(
                brute_force_min_dcf(scores, labels, p_target, c_miss, c_fa),
                abs=1e-9,
            )
        )
    curve = det_curve(scores, labels)
    expected = np.array(brute_force_points(scores, labels))
    np.testing.assert_allclose(curve.p_miss, expected[:, 0], atol=1e-12)
    np.testing.assert_allclose(curve.p_fa, expected[:, 1], atol=1e-12)


def test_hand_computed_values():
    # one tied target/non-target pair makes a diagonal step
    scores = [0.1, 0.4, 0.4, 0.9]
    labels = [0, 0, 1, 1]
    curve = det_curve(scores, labels)
    assert curve.p_miss.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert curve.p_fa.tolist() == [1.0, 0.5, 0.0, 0.0]
    # segment (0, 0.5) -> (0.5, 0): crosses the diagonal at 0.25
    assert compute_eer(scores, labels) == pytest.approx(0.25)
    # p_target 0.5: best point costs 0.25, trivial system 0.5
    assert compute_min_dcf(scores, labels, p_target=0.5) == pytest.approx(0.5)
    assert compute_eer([1.0, 2.0], [1, 0]) == 1.0
    assert compute_min_dcf([1.0, 2.0], [1, 0]) == 1.0  # never beats "reject all"


def test_gaussian_eer_matches_theory():
    rng = np.random.default_rng(0)
    n = 400_000
    labels = rng.random(n) < 0.5
    scores = rng.normal(size=n) + 2.0 * labels
    # equal-variance Gaussians 2 apart: EER = Phi(-1)
    phi = 0.5 * math.erfc(1 / math.sqrt(2))
    assert compute_eer(scores, labels) == pytest.approx(phi, abs=3e-3)


def test_invariance_and_input_types():
    rng = np.random.default_rng(3)
    scores, labels = realistic_scores(rng, 3000)
    reference = verification_metrics(scores, labels)
    # strictly increasing transform and permutation change nothing
    order = rng.permutation(len(scores))
    moved = verification_metrics(np.exp(3 * scores.astype(np.float64))[order], labels[order])
    assert moved == pytest.approx(reference, abs=1e-12)
    as_torch = verification_metrics(
        torch.from_numpy(scores), torch.from_numpy(labels.astype(np.int64))
    )
    assert as_torch == pytest.approx(reference, abs=1e-12)
    assert compute_eer(scores, labels) == reference["eer"]
    assert compute_min_dcf(scores, labels, 0.05) == reference["min_dcf@0.05"]
    half = torch.tensor([0.5, 0.25, 0.75], dtype=torch.bfloat16)
    assert compute_eer(half, torch.tensor([True, False, True])) == 0.0


def test_agrees_with_speechbrain():
    from speechbrain.utils.metric_stats import EER, minDCF

    rng = np.random.default_rng(5)
    scores, labels = realistic_scores(rng, 3000)
    scores = scores + 0.3 * rng.normal(size=3000).astype(np.float32) * labels
    positive = torch.from_numpy(scores[labels])
    negative = torch.from_numpy(scores[~labels])
    # SpeechBrain's minDCF is not normalised and its operating points are the same
    sb_dcf, _ = minDCF(positive, negative, p_target=0.01)
    assert compute_min_dcf(scores, labels, 0.01) * 0.01 == pytest.approx(sb_dcf, abs=1e-6)
    # SpeechBrain's EER is (FAR + FRR) / 2 at the closest point, not the crossing
    sb_eer, _ = EER(positive, negative)
    assert abs(compute_eer(scores, labels) - sb_eer) <= 1.0 / labels.sum()


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        ([0.1, 0.2], [1, 1], "no non-target"),
        ([0.1, 0.2], [0, 0], "no target"),
        ([0.1, 0.2, 0.3], [0, 1], "differ in length"),
        ([0.1, float("nan")], [0, 1], "NaN"),
        ([0.1, 0.2], [0, 2], "0 \\(non-target\\) or 1"),
        ([[0.1, 0.2]], [[0, 1]], "one-dimensional"),
        ([], [], "no target"),
    ],
)
def test_bad_input_raises(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_eer(np.asarray(scores), np.asarray(labels))
    with pytest.raises(ValueError, match=message):
        compute_min_dcf(np.asarray(scores), np.asarray(labels))


def test_bad_costs_raise():
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf([0.1, 0.2], [0, 1], p_target=1.0)
    with pytest.raises(ValueError, match="positive"):
        compute_act_dcf([0.1, 0.2], [0, 1], c_fa=0)


def test_act_dcf_and_cllr():
    rng = np.random.default_rng(7)
    n = 200_000
    labels = rng.random(n) < 0.5
    # x ~ N(+-1, variance 2): log N(x; 1, 2) - log N(x; -1, 2) = x, exact LLRs
    llrs = rng.normal(size=n) * math.sqrt(2) + np.where(labels, 1.0, -1.0)
    for p_target in (0.01, 0.05, 0.5):
        # calibrated LLRs: actual DCF close to minimum DCF
        act = compute_act_dcf(llrs, labels, p_target)
        assert act == pytest.approx(compute_min_dcf(llrs, labels, p_target), abs=0.03)
        # brute-force decision count at the Bayes threshold
        theta = math.log((1 - p_target) / p_target)
        p_miss = np.mean(llrs[labels] < theta)
        p_fa = np.mean(llrs[~labels] >= theta)
        expected = (p_target * p_miss + (1 - p_target) * p_fa) / min(p_target, 1 - p_target)
        assert act == pytest.approx(expected, abs=1e-12)
    cllr = compute_cllr(llrs, labels)
    # miscalibrating (scaling) the same scores costs more
    assert compute_cllr(3 * llrs, labels) > cllr + 0.05
    assert compute_cllr(llrs + 2, labels) > cllr + 0.05
    expected = 0.5 * (
        np.mean(np.log2(1 + np.exp(-llrs[labels]))) + np.mean(np.log2(1 + np.exp(llrs[~labels])))
    )
    assert cllr == pytest.approx(expected, rel=1e-9)
