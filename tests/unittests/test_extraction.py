"""Length-sorted batched embedding extraction."""

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.utils.autocast import AMPConfig, TorchAutocast

from speechbrain_w2vbert_sv.data.audio import AudioFileError
from speechbrain_w2vbert_sv.inference.extraction import autocast_context, embed_files, make_batches
from tests.tiny_models import small_w2vbert_model


@pytest.fixture(scope="module")
def tiny_model():
    return small_w2vbert_model()


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    """Files of various lengths, one at 8 kHz and one with two channels."""
    folder = tmp_path_factory.mktemp("audio")
    gen = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate([0.4, 1.3, 0.7, 0.25, 1.1, 0.9]):
        path = folder / f"{i}.wav"
        soundfile.write(path, 0.1 * gen.standard_normal(int(16000 * seconds)), 16000)
        paths.append(str(path))
    soundfile.write(folder / "8k.flac", 0.1 * gen.standard_normal(6000), 8000)
    soundfile.write(folder / "stereo.wav", 0.1 * gen.standard_normal((9000, 2)), 16000)
    return paths + [str(folder / "8k.flac"), str(folder / "stereo.wav")]


def test_make_batches_covers_everything_within_budget():
    gen = np.random.default_rng(1)
    lengths = gen.integers(1000, 100000, size=200).tolist()
    budget = 3.0 * 16000
    batches = make_batches(lengths, batch_seconds=3.0, max_batch_size=8, max_padding=0.1)
    assert sorted(i for b in batches for i in b) == list(range(200))
    order = [lengths[i] for b in batches for i in b]
    assert order == sorted(lengths, reverse=True)  # length-sorted: little padding
    for batch in batches:
        assert len(batch) <= 8
        longest = max(lengths[i] for i in batch)
        assert len(batch) * longest <= budget or len(batch) == 1
        assert min(lengths[i] for i in batch) >= 0.9 * longest
    with pytest.raises(ValueError, match="batch_seconds"):
        make_batches(lengths, batch_seconds=0)


def test_batched_extraction_equals_one_file_at_a_time(tiny_model, audio_files):
    tiny_model.eval()  # the wrapper below is no module: extraction cannot switch it
    paths = audio_files + audio_files[:2]  # duplicates are embedded once
    calls = []

    def counting_model(wavs, wav_lens):
        calls.append(wavs.shape[0])
        return tiny_model(wavs, wav_lens)

    batched = embed_files(counting_model, paths, batch_seconds=2.0, progress=False)
    assert sum(calls) == len(audio_files) and len(calls) > 1
    assert batched.shape == (len(paths), 16) and batched.dtype == torch.float32
    assert torch.equal(batched[-2:], batched[:2])

    from speechbrain_w2vbert_sv.data.audio import load_audio

    with torch.no_grad():
        singles = torch.cat([tiny_model(load_audio(p)[None]).reshape(1, -1) for p in audio_files])
    assert (batched[: len(audio_files)] - singles).abs().max() < 1e-5

    # A module is run in eval mode (BatchNorm statistics, no dropout), then restored.
    tiny_model.train()
    again = embed_files(tiny_model, audio_files[:2], progress=False)
    assert (again - batched[:2]).abs().max() < 1e-5
    assert tiny_model.training


def test_bf16_autocast_and_errors(tiny_model, audio_files, tmp_path):
    fp32 = embed_files(tiny_model, audio_files[:3], progress=False)
    bf16 = embed_files(tiny_model, audio_files[:3], precision="bf16", progress=False)
    assert bf16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(fp32, bf16).min() > 0.95
    with pytest.raises(ValueError, match="precision"):
        embed_files(tiny_model, audio_files[:1], precision="int8", progress=False)
    with pytest.raises(ValueError, match="no files"):
        embed_files(tiny_model, [], progress=False)
    with pytest.raises(AudioFileError, match="missing.wav: missing file"):
        embed_files(tiny_model, [tmp_path / "missing.wav"], progress=False)


def test_fp32_turns_an_enclosing_autocast_off_unlike_speechbrains():
    """Why ``autocast_context`` is not SpeechBrain's ``TorchAutocast``."""
    linear = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with autocast_context("cpu", "fp32"):
            ours = linear(x)
        with TorchAutocast(device_type="cpu", dtype=AMPConfig.from_name("fp32").dtype):
            speechbrains = linear(x)
    assert (ours.dtype, speechbrains.dtype) == (torch.float32, torch.bfloat16)
    for precision in ("bf16", "fp16"):  # the same where autocast is on
        dtype = AMPConfig.from_name(precision).dtype
        with autocast_context("cpu", precision):
            ours = linear(x)
        with TorchAutocast(device_type="cpu", dtype=dtype):
            speechbrains = linear(x)
        assert ours.dtype == speechbrains.dtype == dtype
