"""The torch w2v-BERT front end against transformers' SeamlessM4TFeatureExtractor."""

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from transformers import SeamlessM4TFeatureExtractor

from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import (
    W2VBertFbank,
    check_waveform_batch,
    num_fbank_frames,
    num_output_frames,
)

TOLERANCE = 1e-3  # max abs difference to the reference, per utterance


@pytest.fixture(scope="module")
def reference():
    return SeamlessM4TFeatureExtractor()


@pytest.fixture(scope="module")
def fbank():
    return W2VBertFbank()


def reference_features(extractor, wav, **kwargs):
    """The extractor on one utterance alone; its valid frames as a tensor."""
    out = extractor(
        np.asarray(wav, dtype=np.float32),
        sampling_rate=extractor.sampling_rate,
        return_tensors="np",
        **kwargs,
    )
    feats, mask = out["input_features"][0], out["attention_mask"][0].astype(bool)
    return torch.from_numpy(feats[mask])


def pad_batch(wavs):
    """Zero-padded batch and relative lengths of a list of 1-D tensors."""
    longest = max(len(w) for w in wavs)
    batch = torch.zeros(len(wavs), longest)
    for i, wav in enumerate(wavs):
        batch[i, : len(wav)] = wav
    return batch, torch.tensor([len(w) / longest for w in wavs])


def assert_batch_matches_reference(fbank, extractor, wavs):
    """Runs one padded batch and compares each utterance to the reference."""
    batch, lens = pad_batch(wavs)
    feats, feat_lens = fbank(batch, lens)
    assert feats.shape == (len(wavs), fbank.num_output_frames(batch.shape[1]), 160)
    worst = 0.0
    for i, wav in enumerate(wavs):
        expected = reference_features(extractor, wav)
        valid = int(round(feat_lens[i].item() * feats.shape[1]))
        assert valid == expected.shape[0] == num_output_frames(len(wav)), i
        worst = max(worst, (feats[i, :valid] - expected).abs().max().item())
        assert not feats[i, valid:].any(), f"padded frames of utterance {i} not zero"
    assert worst <= TOLERANCE, f"max abs difference {worst:.2e} > {TOLERANCE}"
    return worst


def test_filters_and_window_match_reference(fbank, reference):
    mel = torch.from_numpy(reference.mel_filters)
    assert torch.allclose(fbank.mel_filters, mel[fbank.first_bin : fbank.end_bin], atol=1e-12)
    assert not mel[: fbank.first_bin].any() and not mel[fbank.end_bin :].any()
    window = torch.from_numpy(reference.window)
    assert torch.allclose(fbank.window[:400] / 32768, window, atol=1e-12)


# Clips whose quiet bins a float32 spectrum gets wrong by 1.3e-3 to 2.7e-3.
HARD_CLIPS = {
    "arabic_speech_commands/dataset/two/00000025_NO_03.flac",
    "arabic_speech_commands/dataset/previous/00000012_NO_02.flac",
    "fsdd/recordings/8_jackson_0.flac",
    "fsdd/recordings/4_nicolas_45.flac",
}


def test_parity_real_speech(fbank, reference, shared_data):
    rng = np.random.default_rng(0)
    asc = sorted((shared_data / "arabic_speech_commands" / "dataset").glob("*/*.flac"))
    fsdd = sorted((shared_data / "fsdd" / "recordings").glob("*.flac"))
    asc = [p for p in asc if str(p.relative_to(shared_data)) in HARD_CLIPS] + list(
        rng.choice(asc, 8, replace=False)
    )
    fsdd = [p for p in fsdd if str(p.relative_to(shared_data)) in HARD_CLIPS] + list(
        rng.choice(fsdd, 8, replace=False)
    )
    assert len(asc) == len(fsdd) == 10
    wavs = []
    for i, path in enumerate(asc):
        audio, rate = soundfile.read(path, dtype="float32")
        assert rate == 16000
        if i >= 2:  # cut to random lengths: odd and even frame counts, ragged padding
            audio = audio[: rng.integers(2000, len(audio) + 1)]
        wavs.append(torch.from_numpy(audio))
    for path in fsdd:
        audio, rate = soundfile.read(path, dtype="float32")
        assert rate == 8000
        wavs.append(torchaudio.functional.resample(torch.from_numpy(audio), 8000, 16000))
    parities = {num_fbank_frames(len(w)) % 2 for w in wavs}
    assert parities == {0, 1}, "the clips should cover odd and even frame counts"
    assert_batch_matches_reference(fbank, reference, wavs[:10])
    assert_batch_matches_reference(fbank, reference, wavs[10:])
    assert_batch_matches_reference(fbank, reference, wavs[::3])


@pytest.mark.parametrize("amplitude", [1e-3, 0.1, 0.9])
def test_parity_noise(fbank, reference, amplitude):
    gen = torch.Generator().manual_seed(int(amplitude * 1e4))
    lengths = [560, 719, 720, 881, 4001, 16000, 24321, 40000]
    wavs = [amplitude * torch.randn(n, generator=gen).clamp(-1, 1) for n in lengths]
    wavs[-1] += 0.3 * amplitude  # a DC offset, removed frame by frame
    wavs[-2] = wavs[-2] * 1e-3 + 0.5  # an offset far above the signal
    assert_batch_matches_reference(fbank, reference, wavs)


def test_options_match_reference():
    """Other settings of the extractor: no normalisation, 8 kHz, no stacking."""
    wav = 0.1 * torch.randn(9000, generator=torch.Generator().manual_seed(1))
    frames = num_fbank_frames(len(wav))  # 55, odd

    extractor = SeamlessM4TFeatureExtractor()
    feats, _ = W2VBertFbank(normalize=False)(wav)
    expected = reference_features(extractor, wav, do_normalize_per_mel_bins=False)
    assert (feats[0] - expected).abs().max() <= TOLERANCE

    extractor = SeamlessM4TFeatureExtractor(sampling_rate=8000)
    feats, _ = W2VBertFbank(sample_rate=8000)(wav)
    assert (feats[0] - reference_features(extractor, wav)).abs().max() <= TOLERANCE

    # With stride 1 the extractor's mask is empty; compare its frames directly.
    extractor = SeamlessM4TFeatureExtractor(stride=1)
    feats, feat_lens = W2VBertFbank(stride=1)(wav)
    out = extractor(wav.numpy(), sampling_rate=16000, return_tensors="np")
    expected = torch.from_numpy(out["input_features"][0, :frames])
    assert feats.shape == (1, frames, 80) and feat_lens.item() == 1.0
    assert (feats[0] - expected).abs().max() <= TOLERANCE


def test_padding_invariance(fbank):
    gen = torch.Generator().manual_seed(2)
    wav = 0.1 * torch.randn(12345, generator=gen)
    alone, alone_lens = fbank(wav[None])
    for fill in (0.0, 1.0, float("nan"), float("inf")):
        batch = torch.full((3, 20000), fill)
        batch[0] = 0.5 * torch.randn(20000, generator=gen)
        batch[1, :12345] = wav
        batch[2, :600] = wav[:600]
        feats, lens = fbank(batch, torch.tensor([1.0, 12345 / 20000, 600 / 20000]))
        valid = int(round(lens[1].item() * feats.shape[1]))
        assert valid == alone.shape[1] == num_output_frames(12345)
        assert torch.allclose(feats[1, :valid], alone[0], atol=1e-5), fill
        assert torch.isfinite(feats).all() and not feats[1:, valid:].any()


def test_shapes_and_lengths(fbank, reference):
    gen = torch.Generator().manual_seed(3)
    batch = 0.1 * torch.randn(4, 16000, generator=gen)
    lens = torch.tensor([1.0, 0.75, 0.5, 0.05])
    feats, feat_lens = fbank(batch, lens)
    frames = num_output_frames(16000)
    assert feats.shape == (4, frames, 160) and feats.dtype == torch.float32
    samples = torch.round(lens * 16000).long()
    expected = num_output_frames(samples)
    assert torch.equal(expected, torch.tensor([49, 36, 24, 1]))
    assert torch.allclose(feat_lens, expected / frames)
    for i, count in enumerate(expected.tolist()):
        assert not feats[i, count:].any() and feats[i, count - 1].any()

    # The frame counts agree with the extractor's attention mask, odd counts too.
    for samples in (560, 719, 720, 879, 880, 1041, 16000, 16161):
        out = reference(np.zeros(samples, np.float32) + 0.1, sampling_rate=16000)
        assert num_output_frames(samples) == out["attention_mask"].sum(), samples
        assert fbank.num_output_frames(samples) == num_output_frames(samples)
    assert num_output_frames(559) == 0 and fbank.min_samples == 560


def test_one_dimensional_input_is_a_batch_of_one(fbank):
    wav = 0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(4))
    feats, feat_lens = fbank(wav)
    assert feats.shape == (1, num_output_frames(8000), 160)
    assert torch.equal(feats, fbank(wav[None])[0]) and feat_lens.tolist() == [1.0]


def test_block_boundaries_do_not_change_results():
    wavs = 0.1 * torch.randn(3, 30000, generator=torch.Generator().manual_seed(5))
    lens = torch.tensor([1.0, 0.7, 0.31])
    fbank = W2VBertFbank()
    whole = fbank(wavs, lens)[0]
    fbank.block_frames = {"cpu": 60}  # blocks of 20 frames
    assert torch.allclose(fbank(wavs, lens)[0], whole, atol=1e-5)


def test_autocast_does_not_lower_the_precision(fbank):
    wavs = 0.1 * torch.randn(2, 12000, generator=torch.Generator().manual_seed(7))
    expected = fbank(wavs)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = fbank(wavs)[0]
    assert feats.dtype == torch.float32 and torch.equal(feats, expected)


def test_dtypes(fbank):
    wavs = 0.1 * torch.randn(2, 12000, generator=torch.Generator().manual_seed(6))
    lens = torch.tensor([1.0, 0.8])
    feats, feat_lens = fbank(wavs, lens)
    feats64, lens64 = fbank(wavs.double(), lens.double())
    assert feats64.dtype == lens64.dtype == torch.float64
    assert torch.allclose(feats64.float(), feats, atol=1e-4)
    assert torch.allclose(lens64.float(), feat_lens)
    for dtype in (torch.float16, torch.bfloat16):
        low, low_lens = fbank(wavs.to(dtype), lens)
        assert low.dtype == torch.float32 and torch.isfinite(low).all()
        assert torch.equal(low_lens, feat_lens)
    # Converting the module must not round its float64 constants.
    half = W2VBertFbank().half()
    assert torch.equal(half(wavs, lens)[0], feats)


def test_gradient_reaches_the_waveform():
    wavs = (0.1 * torch.randn(2, 1000, dtype=torch.float64)).requires_grad_()
    fbank = W2VBertFbank()
    lens = torch.tensor([1.0, 0.8])
    assert torch.autograd.gradcheck(lambda w: fbank(w, lens)[0], (wavs,), fast_mode=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(fbank):
    wavs = 0.1 * torch.randn(3, 20000, generator=torch.Generator().manual_seed(7))
    lens = torch.tensor([1.0, 0.6, 0.2])
    feats, feat_lens = fbank(wavs, lens)
    feats_gpu, lens_gpu = fbank(wavs.cuda(), lens.cuda())
    assert feats_gpu.device.type == "cuda"
    assert torch.allclose(feats_gpu.cpu(), feats, atol=1e-4)
    assert torch.equal(lens_gpu.cpu(), feat_lens)


@pytest.mark.parametrize(
    "wavs, wav_lens, message",
    [
        (torch.zeros(2, 1, 1000), None, "downmix"),
        (torch.zeros(()), None, "0-D"),
        (torch.zeros(2, 1000, dtype=torch.int16), None, "floating-point"),
        (torch.zeros(0, 1000), None, "empty"),
        (np.zeros((2, 1000)), None, "torch.Tensor"),
        (torch.zeros(2, 1000), torch.ones(3), "shape"),
        (torch.zeros(2, 1000), torch.ones(2, 1), "shape"),
        (torch.zeros(2, 1000), torch.tensor([1.0, 0.0]), "(0, 1]"),
        (torch.zeros(2, 1000), torch.tensor([1.5, 1.0]), "(0, 1]"),
        (torch.zeros(2, 1000), torch.tensor([1.0, -0.5]), "utterance 1"),
        (torch.zeros(2, 1000), torch.tensor([float("nan"), 1.0]), "(0, 1]"),
        (torch.zeros(2, 559), None, "at least 560 samples"),
        (torch.zeros(2, 1000), torch.tensor([1.0, 0.5]), "utterance 1 of wavs has 500"),
    ],
)
def test_invalid_input_raises(fbank, wavs, wav_lens, message):
    with pytest.raises(ValueError) as error:
        fbank(wavs, wav_lens)
    assert message in str(error.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_samples_name_the_utterance(fbank, bad):
    wavs = torch.zeros(3, 2000)
    wavs[2, 10] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf samples in utterance\(s\) \[2\]"):
        fbank(wavs)
    # Beyond the utterance's length it is padding, and is ignored.
    wavs = torch.zeros(3, 2000)
    wavs[2, 1500] = bad
    _, num_samples = check_waveform_batch(wavs, torch.tensor([1.0, 1.0, 0.7]))
    assert num_samples.tolist() == [2000, 2000, 1400]
