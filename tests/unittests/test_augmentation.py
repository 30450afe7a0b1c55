"""Noise/RIR lists and RandomAugment: branch probabilities, SNRs, reverberation, padding."""

import numpy as np
import pytest
import scipy.signal
import soundfile
import torch

from speechbrain_w2vbert_sv.data.audio import load_audio
from speechbrain_w2vbert_sv.data.augmentation import (
    RandomAugment,
    prepare_noise_csv,
    prepare_rir_csv,
    reverberate,
    synthesize_rirs,
)
from speechbrain_w2vbert_sv.data.csv_io import read_csv


@pytest.fixture(scope="module")
def lists(shared_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("aug")
    noise_csv = prepare_noise_csv(shared_data / "arabic_speech_commands" / "background_noise", save)
    rir_csv = prepare_rir_csv(synthesize_rirs(save / "rirs", rt60s=(0.3, 0.6))[0].parent, save)
    speech = sorted((shared_data / "arabic_speech_commands/dataset/yes").glob("*.flac"))[:8]
    babble_folder = save / "babble"
    babble_folder.mkdir()
    for path in speech:  # a babble list is a folder of speech; link a few real clips
        (babble_folder / path.name).symlink_to(path)
    babble_csv = prepare_noise_csv(babble_folder, save, name="babble")
    return {"noise": noise_csv, "rir": rir_csv, "babble": babble_csv}


def _batch(size=6, length=1600, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(size, length, generator=generator)


def _snr_db(clean, noisy):
    return 10 * torch.log10(clean.pow(2).mean() / (noisy - clean).pow(2).mean()).item()


def test_lists(lists):
    noises = read_csv(lists["noise"])
    assert sorted(round(float(r["duration"])) for r in noises) == [85, 104]
    ids = {r["ID"] for r in noises}
    assert ids == {"background_noise--boiler", "background_noise--washing_machine"}
    rirs = read_csv(lists["rir"])
    assert [float(r["duration"]) for r in rirs] == [0.3, 0.6]
    assert len(read_csv(lists["babble"])) == 8


def test_synthetic_rir_decays_60db_in_rt60(tmp_path):
    (path,) = synthesize_rirs(tmp_path, rt60s=(0.5,))
    rir = load_audio(path).numpy()
    direct = int(np.abs(rir).argmax())
    tail = rir[direct + 1 :] ** 2
    # Energy of the first and last 50 ms of the tail: about 60 dB apart over ~0.4 s.
    head_db = 10 * np.log10(tail[800:1600].mean())
    end_db = 10 * np.log10(tail[-800:].mean())
    expected = 60 * (len(tail) - 800 - 800) / 16000 / 0.5
    assert abs((head_db - end_db) - expected) < 6


def test_additive_noise_at_requested_snr_and_padding_kept(lists):
    torch.manual_seed(0)
    augment = RandomAugment(noise_csv=lists["noise"], snr_low=10, snr_high=10, clean_weight=0)
    wavs, lengths = _batch(), torch.tensor([1.0, 1.0, 0.5, 0.5, 0.25, 0.75])
    for i, rel in enumerate(lengths):
        wavs[i, int(rel * wavs.shape[1]) :] = 0
    out = augment(wavs, lengths)
    for i, rel in enumerate(lengths):
        n = int(rel * wavs.shape[1])
        assert _snr_db(wavs[i, :n], out[i, :n]) == pytest.approx(10.0, abs=1e-3)
        assert torch.all(out[i, n:] == 0)
    # Random segments: two utterances never get the same noise.
    assert not torch.allclose(out[0] - wavs[0], out[1] - wavs[1])


def test_babble_in_its_snr_range(lists):
    torch.manual_seed(1)
    augment = RandomAugment(
        babble_csv=lists["babble"], babble_snr_low=15, babble_snr_high=25, clean_weight=0
    )
    wavs = _batch()
    out = augment(wavs, torch.ones(len(wavs)))
    snrs = [_snr_db(wavs[i], out[i]) for i in range(len(wavs))]
    assert all(15 - 1e-3 <= snr <= 25 + 1e-3 for snr in snrs)
    assert max(snrs) - min(snrs) > 0.5  # drawn per utterance


def test_reverberation_matches_linear_convolution(lists):
    wav = _batch(1, 4000)[0]
    rir = load_audio(read_csv(lists["rir"])[0]["wav"])
    direct = int(rir.abs().argmax())
    reference = scipy.signal.fftconvolve(wav.numpy(), rir.numpy())[direct : direct + 4000]
    reference *= wav.pow(2).mean().sqrt().item() / np.sqrt(np.mean(reference**2))
    assert np.abs(reverberate(wav, rir).numpy() - reference).max() < 1e-5

    torch.manual_seed(2)
    augment = RandomAugment(rir_csv=lists["rir"], clean_weight=0)
    wavs = _batch(2, 4000)
    wavs[1, 2000:] = 0
    out = augment(wavs, torch.tensor([1.0, 0.5]))
    assert torch.all(out[1, 2000:] == 0)
    # Only the valid part is reverberated, with one of the listed RIRs.
    rirs = [load_audio(row["wav"]) for row in read_csv(lists["rir"])]
    assert any(torch.allclose(out[1, :2000], reverberate(wavs[1, :2000], r)) for r in rirs)


def test_one_branch_per_utterance_with_equal_probability(lists):
    torch.manual_seed(3)
    augment = RandomAugment(noise_csv=lists["noise"], rir_csv=lists["rir"])
    wavs = _batch(300, 1600, seed=3)
    out = augment(wavs, torch.ones(len(wavs)))
    counts = {"clean": 0, "reverb": 0, "noise": 0}
    for clean, aug in zip(wavs, out):
        if torch.equal(clean, aug):
            counts["clean"] += 1
        elif _snr_db(clean, aug) > 5 - 1e-3:
            assert _snr_db(clean, aug) <= 20 + 1e-3
            counts["noise"] += 1
        else:  # the reverberant tail of white input dwarfs the direct path
            level_ratio = aug.pow(2).mean().sqrt() / clean.pow(2).mean().sqrt()
            assert abs(level_ratio - 1) < 1e-4  # reverberation keeps the level
            counts["reverb"] += 1
    # 300 draws at p = 1/3: each count within 5 standard deviations (about 41).
    assert all(abs(c - 100) < 41 for c in counts.values()), counts


def test_noise_file_at_other_rate_and_stereo(tmp_path):
    folder = tmp_path / "noises"
    folder.mkdir()
    t = np.arange(8000 * 3) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 300 * t)], axis=1) * 0.3
    soundfile.write(folder / "hum.wav", stereo, 8000)
    augment = RandomAugment(noise_csv=prepare_noise_csv(folder, tmp_path), clean_weight=0,
                            snr_low=0, snr_high=0)  # fmt: skip
    wav = torch.zeros(16000)
    wav[::2] = 0.3  # any signal with some power
    added = augment(wav.unsqueeze(0), torch.ones(1))[0] - wav
    spectrum = torch.fft.rfft(added).abs()
    assert abs(int(spectrum.argmax()) - 300) <= 1  # the 300 Hz hum, resampled to 16 kHz


def test_lists_read_at_first_use(tmp_path, lists):
    later = tmp_path / "later.csv"
    augment = RandomAugment(noise_csv=later, clean_weight=0)  # not prepared yet: fine
    later.write_text(lists["noise"].read_text())
    wavs = _batch(2)
    assert not torch.equal(augment(wavs, torch.ones(2)), wavs)


def test_bad_arguments():
    with pytest.raises(ValueError, match="snr_low"):
        RandomAugment(snr_low=20, snr_high=5)
    with pytest.raises(ValueError, match="weights"):
        RandomAugment(clean_weight=0)  # nothing else available either
