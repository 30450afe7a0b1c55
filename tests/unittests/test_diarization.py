"""Diarization: speech detection, window times, clustering, the two embedding modes, the
segments, the command line and its bad inputs.

References: Silero's regions of each clip alone (for the regions of a recording built
from those clips), hand-worked window times and segments, the truth of synthetic
speaker clusters, and the head of the model applied by hand to slices of the encoder's
frame outputs (for shared mode).
"""

import logging
import pathlib

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from sklearn.metrics import adjusted_rand_score

from speechbrain_w2vbert_sv.applications.clustering import cluster
from speechbrain_w2vbert_sv.applications.diarization import Diarizer
from speechbrain_w2vbert_sv.applications.rttm import read_rttm, write_rttm
from speechbrain_w2vbert_sv.applications.vad import SileroVAD
from speechbrain_w2vbert_sv.applications.windows import (
    labels_to_segments,
    merge_regions,
    window_times,
)
from speechbrain_w2vbert_sv.cli import main
from speechbrain_w2vbert_sv.inference.interface import load_model
from tests.conftest import require_module

EXPORTS = pathlib.Path(__file__).resolve().parents[1] / "data" / "legacy_exports"
W2VBERT_EXPORT = EXPORTS / "w2vbert_mfa"
CONFORMER_EXPORT = EXPORTS / "conformer_mfa"
# Three keywords of one ASC val speaker, and one of another.
CLIPS = ("backward", "close", "digit")
OTHER_SPEAKER = "00000012"


def asc_clip(shared_data, keyword, speaker="00000002"):
    path = shared_data / "arabic_speech_commands" / "dataset" / keyword / f"{speaker}_NO_01.flac"
    wav, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000
    return wav


@pytest.fixture(scope="module")
def w2vbert_model():
    return load_model(W2VBERT_EXPORT, run_opts={"device": "cpu"})


@pytest.fixture(scope="module")
def varied_w2vbert_model():
    """A tiny w2v-BERT whose windows' embeddings differ (random attention scores and
    pooling statistics): HF's initial values make every window's embedding alike."""
    from speechbrain_w2vbert_sv.inference.interface import W2VBertSpeakerRecognition
    from tests.tiny_models import randomise_attention_scores, small_w2vbert_model

    model = small_w2vbert_model().eval()
    randomise_attention_scores(model, seed=1)
    with torch.no_grad():
        model.head.pooling.attention[2].running_mean.normal_()
    hparams = {"sample_rate": 16000, "threshold": 0.3}
    return W2VBertSpeakerRecognition(
        modules={"embedding_model": model}, hparams=hparams, run_opts={"device": "cpu"}
    )


@pytest.fixture(scope="module")
def conformer_model():
    return load_model(CONFORMER_EXPORT, run_opts={"device": "cpu"})


def test_vad_regions_of_a_recording_built_from_known_clips(shared_data):
    """Clips separated by 1.5 s of silence: one region per clip, where Silero finds the
    clip's speech alone (between the same silences), at 16 kHz and resampled to 8 and
    44.1 kHz."""
    vad = SileroVAD(min_silence=0.3)
    gap = np.zeros(24000, dtype=np.float32)
    pieces, expected = [gap], []
    for k, keyword in enumerate(CLIPS):
        clip = asc_clip(shared_data, keyword)
        start = (len(gap) + k * (len(clip) + len(gap))) / 16000
        alone = torch.from_numpy(np.concatenate([gap, clip, gap]))
        (region,) = vad(alone)  # one word: one region
        expected.append((start - 1.5 + region[0], start - 1.5 + region[1]))
        pieces += [clip, gap]
    wav = torch.from_numpy(np.concatenate(pieces))
    for rate in (16000, 8000, 44100):
        found = vad(torchaudio.functional.resample(wav, 16000, rate), rate)
        assert len(found) == len(expected), (rate, found)
        # Silero's 32 ms frames (64 ms at 8 kHz), and its resampling.
        np.testing.assert_allclose(found, expected, atol=0.1)
    assert vad(torch.zeros(32000)) == []


@pytest.mark.parametrize(
    "regions, expected",
    [
        ([(0.0, 1.0)], [(0.0, 1.0)]),  # shorter than a window: the region itself
        ([(2.0, 3.5)], [(2.0, 3.5)]),  # exactly a window
        ([(0.0, 3.0)], [(0.0, 1.5), (0.75, 2.25), (1.5, 3.0)]),
        # 2.2 s: a window at 0.75 s would end past the region, so it ends with it.
        ([(1.0, 3.2)], [(1.0, 2.5), (1.7, 3.2)]),
        ([(0.0, 2.5), (4.0, 4.5)], [(0.0, 1.5), (0.75, 2.25), (1.0, 2.5), (4.0, 4.5)]),
    ],
)
def test_window_times(regions, expected):
    np.testing.assert_allclose(window_times(regions, 1.5, 0.75), expected, atol=1e-12)


def test_merge_regions_joins_cuts_and_drops():
    regions = [(5.0, 7.0), (-0.5, 1.0), (0.8, 2.0), (3.0, 3.05), (6.5, 9.0)]
    assert merge_regions(regions, duration=8.0, min_duration=0.1) == [(0.0, 2.0), (5.0, 8.0)]


def test_labels_to_segments_hand_worked():
    windows = [(0.0, 1.5), (0.75, 2.25), (1.5, 3.0), (3.5, 4.0), (5.0, 6.5), (5.75, 7.25)]
    # Boundaries in the middle of overlaps (1.125, 1.875; 6.125); the pause 3.0-3.5
    # stays unlabelled, and one speaker on both sides of a pause is two segments.
    assert labels_to_segments(windows, [0, 1, 1, 1, 0, 0]) == [
        (0.0, 1.125, "spk0"),
        (1.125, 3.0, "spk1"),
        (3.5, 4.0, "spk1"),
        (5.0, 7.25, "spk0"),
    ]
    assert labels_to_segments(windows[:1], [3]) == [(0.0, 1.5, "spk3")]
    assert labels_to_segments(np.zeros((0, 2)), []) == []


def synthetic_speakers(sizes, dim=64, spread=0.35, seed=0):
    """Embeddings of speakers with well separated centres, and their truth."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), dim))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    embeddings = centres[truth] + spread * rng.standard_normal((len(truth), dim))
    order = rng.permutation(len(truth))  # speakers take turns
    return embeddings[order], truth[order]


def test_spectral_clustering_finds_the_speakers_and_their_number():
    embeddings, truth = synthetic_speakers([30, 12, 20, 8])
    labels = cluster(embeddings, "spectral", threshold=0.5)
    assert len(set(labels)) == 4
    assert adjusted_rand_score(truth, labels) == 1.0
    assert labels[0] == 0  # numbered in order of appearance
    for count in (2, 3, 5):  # eigengap estimate and its bounds
        embeddings, truth = synthetic_speakers([15] * count, seed=count)
        assert adjusted_rand_score(truth, cluster(embeddings)) == 1.0
    bounded = cluster(embeddings, max_speakers=3)
    assert len(set(bounded)) == 3
    assert len(set(cluster(embeddings, min_speakers=6))) == 6
    assert len(set(cluster(embeddings, num_speakers=4))) == 4


def test_agglomerative_clustering_with_a_threshold():
    embeddings, truth = synthetic_speakers([30, 12, 20, 8])
    labels = cluster(embeddings, "agglomerative", threshold=0.5)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert len(set(cluster(embeddings, "agglomerative", threshold=0.5, max_speakers=2))) == 2
    assert len(set(cluster(embeddings, "agglomerative", num_speakers=3))) == 3
    with pytest.raises(ValueError, match="needs a threshold"):
        cluster(embeddings, "agglomerative")


def test_one_speaker_and_very_few_windows():
    one, _ = synthetic_speakers([25])
    assert set(cluster(one, threshold=0.5)) == {0}
    assert set(cluster(one, "agglomerative", threshold=0.5)) == {0}
    two, truth = synthetic_speakers([1, 1])
    assert cluster(two[:1], threshold=0.5).tolist() == [0]
    assert cluster(two, threshold=0.5).tolist() == [0, 1]  # dissimilar: two speakers
    assert cluster(np.stack([two[0], two[0]]), threshold=0.5).tolist() == [0, 0]
    assert cluster(two).tolist() == [0, 0]  # no threshold: nothing tells them apart
    assert cluster(two, num_speakers=2).tolist() == [0, 1]
    assert cluster(np.zeros((0, 4))).shape == (0,)
    with pytest.raises(ValueError, match="clustering must be one of"):
        cluster(two, "kmeans")


def test_shared_mode_is_the_head_over_slices_of_the_frames(w2vbert_model):
    """Shared mode against a reference computed by hand: the encoder over the region,
    each window's frames (20 ms each) sliced out, the head over each slice."""
    wav = 0.1 * torch.randn(48000, generator=torch.Generator().manual_seed(0))
    diarizer = Diarizer(w2vbert_model, vad=None, mode="shared")
    windows, embeddings = diarizer.window_embeddings(wav, [(0.0, 3.0)])
    parts = w2vbert_model.mods.embedding_model
    with torch.no_grad():
        hidden, _ = parts.backbone(*parts.frontend(wav[None]))
        # 3 s are 149 frames: window k covers frames round(t * 149 / 3) for its ends.
        assert hidden.shape[2] == 149
        spans = [(0, 75), (37, 112), (75, 149)]
        reference = torch.cat([parts.head(hidden[:, :, a:b])[:, 0] for a, b in spans])
    assert [diarizer.frame_span(w, 48000, 149) for w in windows] == spans
    np.testing.assert_allclose(embeddings, reference.numpy(), atol=1e-5)


@pytest.mark.parametrize("name", ["varied_w2vbert_model", "conformer_model"])
def test_shared_and_window_modes_agree(name, request, shared_data):
    """One window per chunk: shared mode computes exactly window mode. Whole regions:
    the same windows, each embedding nearer its window-mode one than the others are."""
    model = request.getfixturevalue(name)
    clips = [asc_clip(shared_data, k) for k in CLIPS]
    clips += [asc_clip(shared_data, "digit", OTHER_SPEAKER)] * 2
    wav = torch.from_numpy(np.concatenate(clips))
    regions = [(0.2, 1.0), (1.5, 5.0)]
    windows_mode = Diarizer(model, vad=None, mode="windows")
    win, reference = windows_mode.window_embeddings(wav, regions)
    per_window = Diarizer(model, vad=None, mode="shared", chunk_seconds=1.5)
    same_win, same = per_window.window_embeddings(wav, regions)
    np.testing.assert_array_equal(same_win, win)
    np.testing.assert_allclose(same, reference, atol=1e-4)
    shared = Diarizer(model, vad=None, mode="shared").window_embeddings(wav, regions)[1]
    # Tiny random models give every window much the same embedding: compare what
    # differs between windows (the mean of the window-mode embeddings subtracted).
    mean = reference.mean(axis=0)
    a, b = shared - mean, reference - mean
    cosine = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (
        b / np.linalg.norm(b, axis=1, keepdims=True)
    ).T
    own, others = np.diag(cosine), cosine[~np.eye(len(cosine), dtype=bool)]
    print(f"{name}: cosine to its window {own.round(3)}, to the others {others.mean():.3f}")
    assert own.mean() > others.mean()


def test_onnx_and_int8_models_diarize(w2vbert_model, tmp_path, caplog):
    require_module("onnxruntime", "onnxruntime not installed (pip install onnxruntime)")
    require_module("onnxscript", "onnxscript not installed (torch's ONNX exporter needs it)")
    from speechbrain_w2vbert_sv.inference.interface import W2VBertSpeakerRecognition
    from speechbrain_w2vbert_sv.inference.onnx import export_onnx
    from speechbrain_w2vbert_sv.inference.quantization import quantize_dynamic_int8

    wav = 0.1 * torch.randn(4 * 16000, generator=torch.Generator().manual_seed(2))
    regions = [(0.0, 4.0)]
    reference = Diarizer(w2vbert_model, vad=None, mode="windows").window_embeddings(wav, regions)
    # A features-in graph: its export is the quicker one.
    path = export_onnx(w2vbert_model.mods.embedding_model, tmp_path / "m.onnx")
    onnx_model = W2VBertSpeakerRecognition.from_onnx(path)
    with caplog.at_level(logging.WARNING):
        diarizer = Diarizer(onnx_model, vad=None, mode="shared")
    assert diarizer.mode == "windows"
    assert sum("embedding each window instead" in r.getMessage() for r in caplog.records) == 1
    windows, embeddings = diarizer.window_embeddings(wav, regions)
    np.testing.assert_allclose(embeddings, reference[1], atol=1e-4)
    assert diarizer.diarize_waveform(wav, regions)[-1][1] == 4.0

    w2vbert_model.mods.embedding_model = quantize_dynamic_int8(w2vbert_model.mods.embedding_model)
    try:
        int8 = Diarizer(w2vbert_model, vad=None, mode="shared")
        assert int8.mode == "shared"
        windows, embeddings = int8.window_embeddings(wav, regions)
        assert embeddings.shape == reference[1].shape and np.isfinite(embeddings).all()
    finally:
        w2vbert_model.mods.embedding_model = load_model(W2VBERT_EXPORT).mods.embedding_model


@pytest.fixture
def recordings(shared_data, tmp_path):
    """A two-speaker recording with its truth, a one-keyword recording shorter than a
    window, a silent one, and a list file naming them."""
    gap = np.zeros(8000, dtype=np.float32)
    pieces, truth, t = [], [], 0.0
    for keyword, speaker in [(k, "00000002") for k in CLIPS] + [("digit", OTHER_SPEAKER)] * 2:
        clip = asc_clip(shared_data, keyword, speaker)
        pieces += [gap, clip]
        t += len(gap) / 16000
        truth.append((t, t + len(clip) / 16000, speaker))
        t += len(clip) / 16000
    soundfile.write(tmp_path / "talk.wav", np.concatenate(pieces + [gap]), 16000)
    write_rttm(tmp_path / "talk_truth.rttm", "talk", truth)
    soundfile.write(tmp_path / "word.flac", asc_clip(shared_data, "close"), 16000)
    soundfile.write(tmp_path / "quiet.wav", np.zeros(16000 * 3, dtype=np.float32), 16000)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{tmp_path / n}\n" for n in ("talk.wav", "word.flac", "quiet.wav")))
    return tmp_path


def test_diarize_command_end_to_end(recordings, capsys, caplog):
    out = recordings / "rttm"
    argv = ["diarize", str(recordings / "list.txt"), "--model", str(W2VBERT_EXPORT)]
    argv += ["--output_folder", str(out), "--device", "cpu"]
    with caplog.at_level(logging.WARNING):
        main(argv)
    assert sorted(p.name for p in out.iterdir()) == ["quiet.rttm", "talk.rttm", "word.rttm"]
    # The recording field is the file stem; no speech, an empty file.
    assert (out / "talk.rttm").read_text().split()[1] == "talk"
    assert (out / "quiet.rttm").read_text() == ""
    assert any("quiet.wav: no speech found" in r.getMessage() for r in caplog.records)
    # Shorter than a window: one window, one segment, the VAD's region.
    (word,) = read_rttm(out / "word.rttm")["word"]
    region = SileroVAD()(torch.from_numpy(soundfile.read(recordings / "word.flac")[0]).float())
    assert word[:2] == pytest.approx(region[0])
    printed = capsys.readouterr().out
    assert "word: 1 speaker(s), 1 segment(s)" in printed
    assert printed.splitlines()[-1] == f"3 RTTM file(s) in {out}"

    # Resumes: finished recordings are kept.
    main(argv)
    assert "talk: kept the RTTM of an earlier run" in capsys.readouterr().out

    # Oracle speech regions: the segments cover exactly the reference's speech.
    truth = recordings / "talk_truth.rttm"
    main(argv[:1] + [str(recordings / "talk.wav")] + argv[2:] + ["--segments", str(truth)])
    assert "talk: kept" in capsys.readouterr().out
    main(
        [*argv[:1], str(recordings / "talk.wav"), *argv[2:], "--segments", str(truth)]
        + ["--overwrite", "--mode", "windows", "--num_speakers", "2"]
    )
    segments = read_rttm(out / "talk.rttm")["talk"]
    assert len({s for *_, s in segments}) == 2
    covered = merge_regions([s[:2] for s in segments])
    expected = merge_regions([s[:2] for s in read_rttm(truth)["talk"]])
    np.testing.assert_allclose(covered, expected, atol=1e-3)


def test_diarize_command_bad_inputs(recordings, tmp_path):
    from tests.unittests.test_user_errors import cli_error

    cut = tmp_path / "cut.wav"
    soundfile.write(cut, 0.1 * np.ones(16000), 16000, subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[:54])
    out = tmp_path / "out"
    base = ["--model", str(W2VBERT_EXPORT), "--output_folder", str(out), "--device", "cpu"]
    message = cli_error(["diarize", str(cut), str(recordings / "word.flac"), *base])
    assert f"{cut}: truncated file" in message and "1 of 2 file(s)" in message
    assert (out / "word.rttm").is_file() and not (out / "cut.rttm").exists()
    # Oracle regions that do not name a recording; two files of one stem.
    message = cli_error(
        ["diarize", str(recordings / "word.flac"), *base, "--segments"]
        + [str(recordings / "talk_truth.rttm")]
    )
    assert "no speech regions for recording(s) word" in message
    (tmp_path / "again").mkdir()
    soundfile.write(tmp_path / "again" / "word.wav", np.zeros(16000), 16000)
    message = cli_error(
        ["diarize", str(recordings / "word.flac"), str(tmp_path / "again" / "word.wav"), *base]
    )
    assert "share the stem 'word'" in message


def test_interface_diarize(recordings, w2vbert_model):
    segments = w2vbert_model.diarize(recordings / "talk.wav", speech=[(0.5, 2.0)], vad=None)
    assert segments[0][0] == 0.5 and segments[-1][1] == 2.0
    assert w2vbert_model.diarize(recordings / "quiet.wav") == []
