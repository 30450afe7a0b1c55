"""DER and JER: the same numbers as pyannote.metrics called directly, and as an
independent frame-level count with the optimal speaker mapping."""

import logging

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from speechbrain_w2vbert_sv.applications.der import score_diarization
from speechbrain_w2vbert_sv.applications.rttm import write_rttm, write_uem
from speechbrain_w2vbert_sv.cli import main
from tests.conftest import require_module

FRAME = 0.01


def random_segments(rng, speakers, length_frames, turns=4):
    """Turns on the 10 ms grid (so that a frame count is exact): one speaker's turns
    follow each other, different speakers' turns overlap at random."""
    segments = []
    for speaker in speakers:
        time = 0
        for _ in range(turns):
            start = time + int(rng.integers(0, length_frames // turns // 2))
            time = min(start + int(rng.integers(20, length_frames // turns)), length_frames)
            if time > start:
                segments.append((start * FRAME, time * FRAME, speaker))
    return segments


def activity(segments, length_frames):
    """``(speakers, [S, T] bool)``: who speaks in each 10 ms frame."""
    speakers = sorted({s for _, _, s in segments})
    active = np.zeros((len(speakers), length_frames), bool)
    for start, end, speaker in segments:
        active[speakers.index(speaker), round(start / FRAME) : round(end / FRAME)] = True
    return speakers, active


def frame_level_scores(reference, hypothesis, length_frames):
    """NIST's definition counted on frames: per frame, miss = max(0, N_ref - N_hyp),
    false alarm = max(0, N_hyp - N_ref), confusion = min(N_ref, N_hyp) - N_correct
    under the one-to-one mapping of most co-occurring frames; JER per reference speaker
    1 - |r & h| / |r | h| (1 unmapped), averaged."""
    _, ref = activity(reference, length_frames)
    _, hyp = activity(hypothesis, length_frames)
    cooccurrence = ref.astype(int) @ hyp.T.astype(int)
    rows, cols = linear_sum_assignment(-cooccurrence)
    mapped = {r: c for r, c in zip(rows, cols) if cooccurrence[r, c] > 0}
    n_ref, n_hyp = ref.sum(0), hyp.sum(0)
    correct = sum((ref[r] & hyp[c]).sum() for r, c in mapped.items())
    total = n_ref.sum()
    miss = np.maximum(n_ref - n_hyp, 0).sum() / total
    false_alarm = np.maximum(n_hyp - n_ref, 0).sum() / total
    confusion = (np.minimum(n_ref, n_hyp).sum() - correct) / total
    jer = np.mean(
        [
            1 - (ref[r] & hyp[mapped[r]]).sum() / (ref[r] | hyp[mapped[r]]).sum()
            if r in mapped
            else 1.0
            for r in range(len(ref))
        ]
    )
    return miss, false_alarm, confusion, jer


@pytest.fixture(scope="module")
def pyannote():
    return require_module("pyannote.metrics", "pyannote.metrics is not installed")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_der_equals_a_frame_level_count(pyannote, seed):
    rng = np.random.default_rng(seed)
    length = 1000
    reference = {"rec": random_segments(rng, ["A", "B", "C"], length)}
    hypothesis = {"rec": random_segments(rng, ["1", "2", "3", "4"], length)}
    (score,), total = score_diarization(
        reference, hypothesis, collar=0.0, uem={"rec": [(0.0, length * FRAME)]}
    )
    miss, false_alarm, confusion, jer = frame_level_scores(
        reference["rec"], hypothesis["rec"], length
    )
    assert (total.der, total.jer) == (score.der, score.jer)
    assert score.miss == pytest.approx(miss, abs=1e-9)
    assert score.false_alarm == pytest.approx(false_alarm, abs=1e-9)
    assert score.confusion == pytest.approx(confusion, abs=1e-9)
    assert score.der == pytest.approx(miss + false_alarm + confusion, abs=1e-9)
    assert score.jer == pytest.approx(jer, abs=1e-9)
    assert 0 < score.der and score.confusion > 0  # the case exercises all parts


@pytest.mark.parametrize("collar, skip_overlap", [(0.25, False), (0.1, True)])
def test_der_equals_pyannote_metrics_called_directly(pyannote, collar, skip_overlap):
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    rng = np.random.default_rng(3)
    reference = {f"rec{i}": random_segments(rng, ["A", "B", "C"], 1500) for i in range(3)}
    hypothesis = {r: random_segments(rng, ["x", "y"], 1500) for r in reference}
    uem = {r: [(0.5, 6.0), (7.0, 15.0)] for r in reference}
    scores, total = score_diarization(reference, hypothesis, collar, skip_overlap, uem)

    # md-eval's collar (each side) is pyannote.metrics' collar of twice the width.
    der = DiarizationErrorRate(collar=2 * collar, skip_overlap=skip_overlap)
    jer = JaccardErrorRate(collar=2 * collar, skip_overlap=skip_overlap)
    for score in scores:
        ref, hyp = Annotation(uri=score.recording), Annotation(uri=score.recording)
        for annotation, segments in ((ref, reference), (hyp, hypothesis)):
            for i, (start, end, speaker) in enumerate(segments[score.recording]):
                annotation[Segment(start, end), i] = speaker
        regions = Timeline([Segment(*region) for region in uem[score.recording]])
        detail = der(ref, hyp, uem=regions, detailed=True)
        assert score.der == pytest.approx(detail["diarization error rate"], abs=1e-12)
        assert score.miss == pytest.approx(detail["missed detection"] / detail["total"])
        assert score.confusion == pytest.approx(detail["confusion"] / detail["total"])
        assert score.jer == pytest.approx(jer(ref, hyp, uem=regions), abs=1e-12)
    assert total.der == pytest.approx(abs(der), abs=1e-12)
    assert total.jer == pytest.approx(abs(jer), abs=1e-12)
    assert total.der == pytest.approx(total.miss + total.false_alarm + total.confusion)
    assert len({s.der for s in scores}) == 3 and total.der > 0


def test_recordings_on_one_side_only(pyannote, caplog):
    reference = {"both": [(0.0, 2.0, "A")], "no_hypothesis": [(0.0, 3.0, "A")]}
    hypothesis = {"both": [(0.0, 2.0, "x")], "no_reference": [(0.0, 5.0, "x")]}
    with caplog.at_level(logging.WARNING):
        scores, total = score_diarization(reference, hypothesis, collar=0.0)
    assert [s.recording for s in scores] == ["both", "no_hypothesis"]
    assert (scores[0].der, scores[1].miss, scores[1].der) == (0.0, 1.0, 1.0)
    assert total.miss == pytest.approx(3 / 5)
    warnings = caplog.text
    assert "not scored: no_reference" in warnings
    assert "scored as all missed speech: no_hypothesis" in warnings


def test_cli_prints_each_recording_and_the_total_last(pyannote, tmp_path, capsys):
    reference = {"a": [(0.0, 4.0, "A"), (4.0, 8.0, "B")], "b": [(1.0, 3.0, "A")]}
    hypothesis = {"a": [(0.0, 5.0, "1"), (5.0, 8.0, "2")], "b": [(1.0, 2.0, "1")]}
    for folder, table in (("ref", reference), ("hyp", hypothesis)):
        for recording, segments in table.items():
            write_rttm(tmp_path / folder / f"{recording}.rttm", recording, segments)
    write_uem(tmp_path / "all.uem", "a", [(0.0, 6.0)])
    write_uem(tmp_path / "uem" / "b.uem", "b", [(0.0, 4.0)])
    (tmp_path / "uem" / "a.uem").write_text((tmp_path / "all.uem").read_text())

    argv = ["der", "--reference", str(tmp_path / "ref"), "--hypothesis", str(tmp_path / "hyp")]
    main(argv + ["--collar", "0", "--uem", str(tmp_path / "uem")])
    lines = capsys.readouterr().out.splitlines()
    scores, total = score_diarization(
        reference, hypothesis, collar=0.0, uem={"a": [(0.0, 6.0)], "b": [(0.0, 4.0)]}
    )
    assert lines == [s.line() for s in scores] + [total.line()]
    last = dict(pair.split("=") for pair in lines[-1].split())
    assert list(last) == ["der", "miss", "false_alarm", "confusion", "jer"]
    # a: 1 s of B confused within the first 6 s; b: 1 s of A missed; 8 s of speech.
    assert float(last["der"]) == pytest.approx(2 / 8, abs=1e-4)

    # A UEM without one of the reference recordings is named.
    with pytest.raises(SystemExit, match="all.uem: no region for recording.s. b"):
        main(argv + ["--uem", str(tmp_path / "all.uem")])
