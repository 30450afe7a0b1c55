"""Audio reading: values, downmixing, resampling, segments and the error for each bad file."""

import numpy as np
import pytest
import soundfile
import torch

from speechbrain_w2vbert_sv.data.audio import AudioFileError, audio_info, load_audio


@pytest.fixture
def tone(tmp_path):
    """A 440 Hz tone written as 16-bit PCM at 8 kHz (0.5 s)."""
    t = np.arange(4000) / 8000
    path = tmp_path / "tone8k.wav"
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 440 * t), 8000, subtype="PCM_16")
    return path


def test_mono_values_match_soundfile(tmp_path):
    data = (np.random.default_rng(0).standard_normal(1234) * 0.1).astype(np.float32)
    path = tmp_path / "a.flac"
    soundfile.write(path, data, 16000)
    wav = load_audio(path)
    reference, _ = soundfile.read(path, dtype="float32")
    assert wav.dtype == torch.float32 and wav.shape == (1234,)
    assert torch.equal(wav, torch.from_numpy(reference))


def test_stereo_is_averaged(tmp_path):
    rng = np.random.default_rng(1)
    data = (rng.uniform(-0.5, 0.5, (800, 2))).astype(np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, data, 16000, subtype="FLOAT")
    assert torch.allclose(load_audio(path), torch.from_numpy(data.mean(axis=1)), atol=1e-7)
    assert audio_info(path).channels == 2


def test_resampling_keeps_the_tone(tone):
    wav = load_audio(tone, sample_rate=16000)
    assert wav.shape == (8000,)
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    # Away from the edges the band-limited resampler reproduces the tone closely.
    assert np.abs(wav.numpy()[200:-200] - expected[200:-200]).max() < 0.01


def test_segment_equals_slice_of_whole_file(tone):
    whole = load_audio(tone, sample_rate=8000)
    part = load_audio(tone, sample_rate=8000, offset=0.1, duration=0.05)
    assert torch.equal(part, whole[800:1200])
    # A segment running past the end is cut at the end.
    assert load_audio(tone, sample_rate=8000, offset=0.45, duration=1.0).shape == (400,)


def test_audio_info(tone):
    info = audio_info(tone)
    assert (info.sample_rate, info.channels, info.frames) == (8000, 1, 4000)
    assert info.duration == pytest.approx(0.5)


def _expect_error(path, fragment, **kwargs):
    with pytest.raises(AudioFileError) as caught:
        load_audio(path, **kwargs)
    assert isinstance(caught.value, ValueError)
    assert str(path) in str(caught.value) and fragment in caught.value.problem
    return caught.value


def test_errors_name_file_and_problem(tmp_path, tone):
    _expect_error(tmp_path / "absent.wav", "missing")

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _expect_error(empty, "empty file")

    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(tone.read_bytes()[:20])
    _expect_error(truncated, "unreadable")

    no_frames = tmp_path / "no_frames.wav"
    soundfile.write(no_frames, np.zeros(0), 16000)
    _expect_error(no_frames, "0 frames")

    for bad_value in (np.nan, np.inf):
        data = np.zeros(100, dtype=np.float32)
        data[10] = bad_value
        path = tmp_path / f"bad_{bad_value}.wav"
        soundfile.write(path, data, 16000, subtype="FLOAT")
        _expect_error(path, "NaN or Inf")

    error = _expect_error(tone, "too short", sample_rate=16000, min_samples=9000)
    assert "8000 samples" in error.problem


def test_compressed_audio_error_says_how_to_convert(tmp_path):
    fake = tmp_path / "00001.m4a"
    fake.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(100))
    error = _expect_error(fake, "unreadable")
    assert "ffmpeg" in error.problem and "convert_to_wav" in error.problem
