"""Trial lists, cosine scoring, adaptive s-norm, QMF, result files and plots."""

import gzip
import math
import struct
import zlib

import numpy as np
import pytest
import torch

from speechbrain_w2vbert_sv.scoring.calibration import QMFCalibrator, qmf_features, quality_measures
from speechbrain_w2vbert_sv.scoring.cosine import cosine_scores, embedding_matrix, mean_embedding
from speechbrain_w2vbert_sv.scoring.metrics import compute_act_dcf, compute_cllr, compute_min_dcf
from speechbrain_w2vbert_sv.scoring.plots import plot_det, plot_score_histogram
from speechbrain_w2vbert_sv.scoring.results import (
    evaluate,
    format_results_table,
    write_results_table,
)
from speechbrain_w2vbert_sv.scoring.score_normalization import adaptive_snorm, cohort_statistics
from speechbrain_w2vbert_sv.scoring.trials import Trials, read_scores, read_trials, write_scores

LIST_TEXT = (
    "1 id1/a/00001.wav id1/b/00002.wav\n"
    "0 id1/a/00001.wav id2/c/00001.wav\n"
    "\n"
    "1 id2/c/00001.wav id2/d/00003.wav\n"
)


# ---------------------------------------------------------------- trial lists


@pytest.mark.parametrize("compressed", [False, True])
def test_read_trials(tmp_path, compressed):
    path = tmp_path / ("list.txt.gz" if compressed else "list.txt")
    if compressed:
        with gzip.open(path, "wt") as f:
            f.write(LIST_TEXT)
    else:
        path.write_text(LIST_TEXT)
    trials = read_trials(path)
    assert len(trials) == 3
    assert trials.labels.tolist() == [1, 0, 1]
    assert trials.utterances == (
        "id1/a/00001.wav",
        "id1/b/00002.wav",
        "id2/c/00001.wav",
        "id2/d/00003.wav",
    )
    assert trials.enroll_ids == ["id1/a/00001.wav", "id1/a/00001.wav", "id2/c/00001.wav"]
    assert trials.test_ids == ["id1/b/00002.wav", "id2/c/00001.wav", "id2/d/00003.wav"]
    assert trials.enroll_index.tolist() == [0, 0, 2]
    assert trials.paths("/root")[3] == "/root/id2/d/00003.wav"


@pytest.mark.parametrize(
    "bad_line",
    ["1 only_two.wav", "2 a.wav b.wav", "target a.wav b.wav", "1 a.wav b.wav extra"],
)
def test_malformed_trial_line_names_file_and_line(tmp_path, bad_line):
    path = tmp_path / "bad.txt"
    lines = LIST_TEXT.splitlines()  # line 3 is blank
    lines.insert(4, bad_line)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 5: expected"):
        read_trials(path)


def test_empty_trial_list(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        read_trials(path)


@pytest.mark.parametrize(
    "name, trials, targets, utterances",
    [
        ("veri_test2.txt", 37_611, 18_802, 4_708),
        ("veri_test.txt", 37_720, 18_860, None),
        ("list_test_all.txt.gz", 581_480, 290_743, 145_375),
        ("list_test_hard.txt.gz", 552_536, 276_270, 138_137),
    ],
)
def test_real_voxceleb_lists(shared_data, name, trials, targets, utterances):
    parsed = read_trials(shared_data / "voxceleb_trials" / name)
    assert len(parsed) == trials
    assert int(parsed.labels.sum()) == targets
    if utterances is not None:
        assert len(parsed.utterances) == utterances
    assert list(parsed.utterances) == sorted(parsed.utterances)
    assert parsed.utterances[0].startswith("id1") and parsed.utterances[0].endswith(".wav")


# ----------------------------------------------------- embeddings and cosine


def small_problem(seed=0, utterances=12, dim=16, cohort=40, trials=60):
    gen = torch.Generator().manual_seed(seed)
    ids = [f"spk{i % 4}/utt{i}.wav" for i in range(utterances)]
    table = {utt: torch.randn(1, dim, generator=gen) + 0.5 for utt in ids}
    pairs = torch.randint(0, utterances, (trials, 2), generator=gen).tolist()
    labels = [int(ids[a][:4] == ids[b][:4]) for a, b in pairs]
    trial_list = Trials.from_lists(labels, [ids[a] for a, _ in pairs], [ids[b] for _, b in pairs])
    cohort_matrix = torch.randn(cohort, dim, generator=gen) + 0.5
    return trial_list, table, cohort_matrix


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_embedding_matrix_from_dict_and_matrix():
    trials, table, _ = small_problem()
    from_dict = embedding_matrix(table, trials.utterances)
    ids = list(table)[::-1]
    matrix = torch.cat([table[i] for i in ids]).numpy()
    from_matrix = embedding_matrix(matrix, trials.utterances, ids=ids)
    assert torch.equal(from_dict, from_matrix)
    with pytest.raises(ValueError, match="1 utterance\\(s\\) have no embedding, e.g. 'x'"):
        embedding_matrix(table, ["x"])
    with pytest.raises(ValueError, match="ids"):
        embedding_matrix(matrix, trials.utterances)
    with pytest.raises(ValueError, match="rows but"):
        embedding_matrix(matrix, trials.utterances, ids=ids[:-1])


@pytest.mark.parametrize("subtract_mean", [False, True])
def test_cosine_scores_match_per_trial_loop(subtract_mean):
    trials, table, cohort = small_problem()
    mean = mean_embedding(cohort) if subtract_mean else None
    scores = cosine_scores(trials, table, mean=mean, chunk_size=7)
    shift = mean.numpy() if subtract_mean else 0.0
    expected = [
        cosine(table[e].numpy() - shift, table[t].numpy() - shift)
        for e, t in zip(trials.enroll_ids, trials.test_ids)
    ]
    np.testing.assert_allclose(scores.numpy(), expected, atol=1e-6)


# -------------------------------------------------------------------- s-norm


def slow_snorm(trials, table, cohort, top_n, mean):
    """Per-trial reference: score both sides against the whole cohort."""
    cohort = cohort.numpy().astype(np.float64) - mean
    out = []
    for e, t in zip(trials.enroll_ids, trials.test_ids):
        enroll = table[e].numpy().ravel() - mean
        test = table[t].numpy().ravel() - mean
        score = cosine(enroll, test)
        normalised = 0.0
        for side in (enroll, test):
            cohort_scores = sorted((cosine(side, c) for c in cohort), reverse=True)
            top = np.array(cohort_scores[:top_n])
            normalised += 0.5 * (score - top.mean()) / top.std(ddof=1)
        out.append(normalised)
    return np.array(out)


@pytest.mark.parametrize("top_n, subtract_mean", [(5, False), (17, True), (1000, True)])
def test_adaptive_snorm_matches_per_trial_reference(top_n, subtract_mean):
    trials, table, cohort = small_problem()
    mean = mean_embedding(cohort) if subtract_mean else None
    raw = cosine_scores(trials, table, mean=mean)
    normed, (mu, sd) = adaptive_snorm(
        raw,
        trials,
        table,
        cohort,
        mean=mean,
        top_n=top_n,
        chunk_size=5,
        return_statistics=True,
    )
    shift = mean.numpy().astype(np.float64) if subtract_mean else 0.0
    expected = slow_snorm(trials, table, cohort, top_n, shift)
    np.testing.assert_allclose(normed.numpy(), expected, atol=2e-5)
    assert mu.shape == sd.shape == (len(trials.utterances),)


def test_snorm_rejects_bad_input():
    trials, table, cohort = small_problem()
    raw = cosine_scores(trials, table)
    with pytest.raises(ValueError, match="at least 2 cohort scores"):
        adaptive_snorm(raw, trials, table, cohort, top_n=1)
    with pytest.raises(ValueError, match="one score per trial"):
        adaptive_snorm(raw[:-1], trials, table, cohort)
    with pytest.raises(ValueError, match="dimensions"):
        cohort_statistics(torch.randn(3, 16), torch.randn(5, 8))
    with pytest.raises(ValueError, match="zero spread"):
        cohort_statistics(torch.randn(3, 8), torch.ones(5, 8))


# ----------------------------------------------------------------------- QMF


def synthetic_quality_trials(seed, n=20_000, effect=1.5):
    """Trials whose scores are shifted by the shorter utterance's duration.

    A duration effect moves target and non-target scores alike, so the score
    alone is miscalibrated per condition; QMF can undo the shift.
    """
    rng = np.random.default_rng(seed)
    n_utt = 4000
    ids = [f"u{i}" for i in range(n_utt)]
    durations = np.exp(rng.uniform(np.log(1.0), np.log(20.0), n_utt))
    enroll = rng.integers(0, n_utt, n)
    test = rng.integers(0, n_utt, n)
    labels = (rng.random(n) < 0.5).astype(int)
    log_min = np.log(np.minimum(durations[enroll], durations[test]))
    scores = rng.normal(size=n) + 3.0 * labels + effect * (log_min - log_min.mean())
    trials = Trials.from_lists(labels, [ids[i] for i in enroll], [ids[i] for i in test])
    table = {u: torch.ones(2) for u in ids}  # norms carry no information here
    qualities = quality_measures(trials, table, durations=dict(zip(ids, durations.tolist())))
    return trials, torch.tensor(scores), qualities


def test_qmf_fit_matches_generic_optimiser():
    from scipy.optimize import minimize

    trials, scores, qualities = synthetic_quality_trials(0, n=3000)
    features = qmf_features(scores, trials, qualities)
    labels = trials.labels
    prior, l2 = 0.3, 1e-3
    calibrator = QMFCalibrator(features.shape[1], prior=prior, l2=l2).fit(features, labels)

    x = features.numpy()[:, :3]  # the constant embedding-norm columns drop out
    x = (x - x.mean(0)) / x.std(0, ddof=1)
    tar = labels == 1
    offset = math.log(prior / (1 - prior))

    def objective(params):
        z = x @ params[:-1] + params[-1] + offset
        return (
            prior * np.logaddexp(0, -z[tar]).mean()
            + (1 - prior) * np.logaddexp(0, z[~tar]).mean()
            + 0.5 * l2 * (params[:-1] ** 2).sum()
        )

    result = minimize(objective, np.zeros(x.shape[1] + 1), method="BFGS", options={"gtol": 1e-10})
    expected_llr = x @ result.x[:-1] + result.x[-1]
    np.testing.assert_allclose(calibrator(features).numpy(), expected_llr, atol=1e-4)


def test_qmf_improves_calibration_on_held_out_trials():
    train, train_scores, train_q = synthetic_quality_trials(1)
    test, test_scores, test_q = synthetic_quality_trials(2)

    # linear calibration of the score alone vs QMF with the quality measures
    linear = QMFCalibrator(1).fit(train_scores[:, None], train.labels)
    linear_llr = linear(test_scores[:, None])
    n_features = 1 + 2 * len(train_q)
    qmf = QMFCalibrator(n_features).fit(qmf_features(train_scores, train, train_q), train.labels)
    qmf_llr = qmf(qmf_features(test_scores, test, test_q))

    assert compute_cllr(qmf_llr, test.labels) < compute_cllr(linear_llr, test.labels) - 0.05
    labels = test.labels
    assert compute_min_dcf(qmf_llr, labels, 0.05) < compute_min_dcf(test_scores, labels, 0.05)
    assert compute_act_dcf(qmf_llr, labels, 0.05) < compute_act_dcf(linear_llr, labels, 0.05)
    # the calibrated scores beat the uninformative system
    assert compute_cllr(linear_llr, test.labels) < 0.5


def test_qmf_preserves_calibration_without_quality_effect():
    train, train_scores, train_q = synthetic_quality_trials(3, effect=0.0)
    test, test_scores, test_q = synthetic_quality_trials(4, effect=0.0)
    linear = QMFCalibrator(1).fit(train_scores[:, None], train.labels)
    qmf = QMFCalibrator(1 + 2 * len(train_q)).fit(
        qmf_features(train_scores, train, train_q), train.labels
    )
    linear_cllr = compute_cllr(linear(test_scores[:, None]), test.labels)
    qmf_cllr = compute_cllr(qmf(qmf_features(test_scores, test, test_q)), test.labels)
    assert qmf_cllr < linear_cllr + 0.005


def test_qmf_state_dict_round_trip_and_errors():
    train, scores, qualities = synthetic_quality_trials(5, n=2000)
    features = qmf_features(scores, train, qualities)
    fitted = QMFCalibrator(features.shape[1]).fit(features, train.labels)
    loaded = QMFCalibrator(features.shape[1])
    loaded.load_state_dict(fitted.state_dict())
    assert torch.equal(loaded(features), fitted(features))
    with pytest.raises(ValueError, match="shape \\[T, 5\\]"):
        fitted(features[:, :2])
    with pytest.raises(ValueError, match="both target and non-target"):
        QMFCalibrator(5).fit(features, np.ones(len(train), dtype=int))
    with pytest.raises(ValueError, match="durations: 2518 utterance\\(s\\) have no value"):
        quality_measures(train, {u: [1.0] for u in train.utterances}, durations={})


# -------------------------------------------------------------- result files


def test_scores_file_round_trip_and_errors(tmp_path):
    trials, table, _ = small_problem()
    scores = cosine_scores(trials, table)
    path = tmp_path / "scores.txt"
    write_scores(path, trials, scores)
    first = path.read_text().splitlines()[0].split()
    assert first[:2] == [trials.enroll_ids[0], trials.test_ids[0]]
    assert first[3] == str(trials.labels[0])
    read_back, read_values = read_scores(path)
    assert read_back.enroll_ids == trials.enroll_ids
    assert read_back.test_ids == trials.test_ids
    assert read_back.labels.tolist() == trials.labels.tolist()
    np.testing.assert_array_equal(read_values.astype(np.float32), scores.numpy())

    bad = tmp_path / "bad_scores.txt"
    bad.write_text("a b 0.5 1\na b zero 1\n")
    with pytest.raises(ValueError, match="bad_scores.txt, line 2"):
        read_scores(bad)
    with pytest.raises(ValueError, match="one score per trial"):
        write_scores(path, trials, scores[:3])


def test_results_table(tmp_path):
    results = {
        "Vox1-O": evaluate([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]),
        "Vox1-H": evaluate([0.9, 0.2, 0.3, 0.1], [1, 1, 0, 0]),
    }
    table = write_results_table(tmp_path / "results.md", results)
    assert (tmp_path / "results.md").read_text() == table + "\n"
    rows = table.splitlines()
    assert rows[0].startswith("| list |")
    assert "minDCF (0.01)" in rows[0] and "minDCF (0.05)" in rows[0]
    assert rows[2] == "| Vox1-O | 2/2 | 0.000 | 0.0000 | 0.0000 |"
    assert rows[3].startswith("| Vox1-H | 2/2 | 50.000 |")
    assert format_results_table({}) == "\n".join(rows[:2])


# ---------------------------------------------------------------------- plots


def read_png_size(path):
    """Validates the PNG signature and every chunk CRC; returns (width, height)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc
        chunks.append(kind)
        position += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    return struct.unpack(">II", data[16:24])


def test_plots_write_valid_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.random(5000) < 0.5
    scores = rng.normal(size=5000) + 3 * labels
    det = plot_det(
        tmp_path / "det.png",
        {"a": (scores, labels), "b": (torch.tensor(scores * 0.5 + rng.normal(size=5000)), labels)},
        title="DET",
    )
    width, height = read_png_size(det)
    assert width > 300 and height > 300
    hist = plot_score_histogram(tmp_path / "hist.png", scores, labels, bins=50)
    width, height = read_png_size(hist)
    assert width > 300 and height > 200
    with pytest.raises(ValueError, match="limits"):
        plot_det(tmp_path / "x.png", {"a": (scores, labels)}, limits=(0.5, 0.1))
