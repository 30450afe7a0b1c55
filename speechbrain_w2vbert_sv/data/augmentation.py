"""Noise and room-impulse-response lists, and the per-utterance random augmentation.

Lists are CSVs (``ID,duration,wav,sample_rate,channels``) of local folders: MUSAN
(``noise/``, ``music/``; ``speech/`` for babble) and RIRS_NOISES for real training,
or any folder of noises (e.g. the Arabic Speech Commands background noises) and RIRs
made by :func:`synthesize_rirs`.

:class:`RandomAugment` gives each utterance exactly one of {clean, additive noise,
reverberation}, with equal probability by default. It is written here rather than
built from SpeechBrain's ``AddNoise``/``AddReverb`` because those convolve circularly
(the reverberant tail of the end wraps onto the start) and draw one RIR and one
noise offset per batch while decoding whole noise files each time.

Example
-------
>>> folder = getfixture("tmp_path")
>>> _ = synthesize_rirs(folder / "rirs")
>>> rir_csv = prepare_rir_csv(folder / "rirs", folder)
>>> augment = RandomAugment(rir_csv=rir_csv)
>>> augment(torch.randn(2, 1600), torch.tensor([1.0, 0.5])).shape
torch.Size([2, 1600])
"""

import pathlib

import numpy as np
import soundfile
import torch

from speechbrain_w2vbert_sv.data.audio import load_audio
from speechbrain_w2vbert_sv.data.csv_io import read_csv
from speechbrain_w2vbert_sv.data.generic import AUDIO_EXTENSIONS, find_audio_files
from speechbrain_w2vbert_sv.data.preparation import prepare_entries


def _prepare_list(folders, save_folder, name, min_duration, read_samples, num_workers):
    """CSV ``{name}.csv`` of every audio file under ``folders`` (checked, reported)."""
    folders = folders if isinstance(folders, (list, tuple)) else [folders]
    entries = []
    for folder in folders:
        root = pathlib.Path(folder).resolve()
        entries += [
            {"path": str(root / rel), "rel": f"{root.name}/{rel}"}
            for rel in find_audio_files(root, AUDIO_EXTENSIONS)
        ]
    if not entries:
        raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {folders}")
    outputs = prepare_entries(
        {name: entries},
        save_folder,
        min_duration=min_duration,
        read_samples=read_samples,
        num_workers=num_workers,
        report_name=f"{name}_skipped.txt",
    )
    return outputs[name]


def prepare_noise_csv(
    noise_folders, save_folder, name="noise", min_duration=0.1, read_samples=True, num_workers=0
):
    """Lists the noise recordings of one or more folders as ``{name}.csv``.

    Long recordings are kept whole: :class:`RandomAugment` reads random segments.
    Unusable files are reported in ``{name}_skipped.txt``.

    Arguments
    ---------
    noise_folders : str, os.PathLike or list of them
        Folders searched recursively (e.g. ``musan/noise``, ``musan/music``).
    save_folder : str or os.PathLike
        Output folder.
    name : str
        Name of the CSV (``"babble"`` for a list of speech used as babble).
    min_duration : float
        Shortest usable recording, in seconds.
    read_samples : bool
        Decode every file to look for NaN/Inf.
    num_workers : int
        Processes used to check the files.

    Returns
    -------
    pathlib.Path
        The CSV.

    Example
    -------
    >>> import numpy, soundfile
    >>> folder = getfixture("tmp_path") / "noises"
    >>> folder.mkdir()
    >>> soundfile.write(folder / "hum.flac", numpy.zeros(8000), 16000)
    >>> from speechbrain_w2vbert_sv.data.csv_io import read_csv
    >>> read_csv(prepare_noise_csv(folder, folder.parent))[0]["ID"]
    'noises--hum'
    """
    return _prepare_list(noise_folders, save_folder, name, min_duration, read_samples, num_workers)


def prepare_rir_csv(rir_folders, save_folder, name="rir", read_samples=True, num_workers=0):
    """Lists room impulse responses as ``{name}.csv``.

    Arguments
    ---------
    rir_folders : str, os.PathLike or list of them
        Folders searched recursively (e.g. ``RIRS_NOISES/simulated_rirs``).
    save_folder : str or os.PathLike
        Output folder.
    name : str
        Name of the CSV.
    read_samples : bool
        Decode every file to look for NaN/Inf.
    num_workers : int
        Processes used to check the files.

    Returns
    -------
    pathlib.Path
        The CSV.
    """
    return _prepare_list(rir_folders, save_folder, name, 0.001, read_samples, num_workers)


def synthesize_rirs(save_folder, rt60s=(0.3, 0.5, 0.8), sample_rate=16000, seed=0):
    """Writes synthetic room impulse responses: a direct path and a decaying noise tail.

    The tail is white noise under an exponential envelope that falls 60 dB in
    ``rt60`` seconds, starting 5 ms after the direct impulse (early reflections
    blurred into the tail); each RIR lasts ``rt60`` seconds.

    Arguments
    ---------
    save_folder : str or os.PathLike
        Output folder (``rir_rt60_{ms}ms.wav`` files).
    rt60s : tuple of float
        Reverberation times in seconds, one RIR each.
    sample_rate : int
        Rate of the files.
    seed : int
        Seed of the noise.

    Returns
    -------
    list of pathlib.Path
        The RIR files.

    Example
    -------
    >>> paths = synthesize_rirs(getfixture("tmp_path"), rt60s=(0.2,))
    >>> wav = load_audio(paths[0])
    >>> wav.shape, wav.abs().argmax().item()
    (torch.Size([3200]), 16)
    """
    folder = pathlib.Path(save_folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    direct = int(0.001 * sample_rate)
    gap = int(0.005 * sample_rate)
    for rt60 in rt60s:
        length = int(rt60 * sample_rate)
        t = np.arange(length - direct - gap) / sample_rate
        tail = rng.standard_normal(t.size) * np.exp(-np.log(1000.0) * t / rt60)
        rir = np.zeros(length)
        rir[direct] = 1.0
        # Tail at 0.3 of the direct path: a clearly reverberant but intelligible room.
        rir[direct + gap :] = 0.3 * tail / np.abs(tail).max()
        path = folder / f"rir_rt60_{int(round(rt60 * 1000))}ms.wav"
        soundfile.write(path, rir.astype(np.float32), sample_rate, subtype="FLOAT")
        paths.append(path)
    return paths


def reverberate(wav, rir):
    """Linear convolution with a RIR, aligned on its direct path, same length as ``wav``.

    The output is rescaled to the input's RMS so reverberation does not change the
    level.

    Arguments
    ---------
    wav : torch.Tensor
        Waveform ``[S]``.
    rir : torch.Tensor
        Impulse response ``[K]``; its largest absolute sample is the direct path.

    Returns
    -------
    torch.Tensor
        Reverberant waveform ``[S]``.

    Example
    -------
    >>> wav = torch.tensor([0.0, 1.0, 0.0, 0.0])
    >>> reverberate(wav, torch.tensor([0.0, 1.0, 0.5])).round(decimals=4)  # aligned
    tensor([0.0000, 0.8944, 0.4472, 0.0000])
    """
    size = wav.numel() + rir.numel() - 1
    direct = int(rir.abs().argmax())
    full = torch.fft.irfft(
        torch.fft.rfft(wav, n=size) * torch.fft.rfft(rir.to(wav), n=size), n=size
    )
    out = full[direct : direct + wav.numel()]
    return out * (_rms(wav) / _rms(out).clamp(min=1e-8))


def _rms(wav):
    return wav.pow(2).mean().sqrt()


def _fit_length(wav, length):
    """Repeats (wraps) a waveform up to ``length`` samples, or cuts it there."""
    if wav.numel() < length:
        wav = wav.repeat(-(-length // wav.numel()))
    return wav[:length]


class RandomAugment(torch.nn.Module):
    """Per utterance, exactly one of {clean, additive noise, reverberation}.

    The choice is drawn independently for each utterance with probabilities
    proportional to the weights (equal by default); a branch without a list is
    never drawn. Additive noise is a random segment of a random recording (repeated
    if too short) at a random SNR; with a babble list, half of the additive draws
    are babble instead: the sum of ``babble_count`` speech segments at the babble
    SNR. Reverberation is a linear convolution with a random RIR. Only the valid
    part of each utterance (its relative length) is read and changed; padding stays
    zero. The lists are read at first use, so an hparams file may build the module
    before the recipe has prepared them.

    Arguments
    ---------
    noise_csv : str or os.PathLike, optional
        Noise list (:func:`prepare_noise_csv`).
    rir_csv : str or os.PathLike, optional
        RIR list (:func:`prepare_rir_csv`).
    babble_csv : str or os.PathLike, optional
        Speech list for babble (e.g. MUSAN ``speech/`` via :func:`prepare_noise_csv`).
    snr_low, snr_high : float
        SNR range of additive noise, in dB.
    babble_snr_low, babble_snr_high : float
        SNR range of babble, in dB.
    babble_count : int
        Speech segments summed into one babble.
    clean_weight, noise_weight, reverb_weight : float
        Relative probabilities of the three branches.
    sample_rate : int
        Rate of the waveforms (noises and RIRs are resampled to it).

    Example
    -------
    >>> torch.manual_seed(0) and None
    >>> augment = RandomAugment(clean_weight=1.0)  # no lists: always clean
    >>> wavs = torch.randn(3, 800)
    >>> torch.equal(augment(wavs, torch.ones(3)), wavs)
    True
    """

    def __init__(
        self,
        noise_csv=None,
        rir_csv=None,
        babble_csv=None,
        snr_low=5.0,
        snr_high=20.0,
        babble_snr_low=15.0,
        babble_snr_high=25.0,
        babble_count=3,
        clean_weight=1.0,
        noise_weight=1.0,
        reverb_weight=1.0,
        sample_rate=16000,
    ):
        super().__init__()
        ranges = {"snr": (snr_low, snr_high), "babble_snr": (babble_snr_low, babble_snr_high)}
        for what, (low, high) in ranges.items():
            if low > high:
                raise ValueError(f"{what}_low ({low}) must not exceed {what}_high ({high})")
        # The lists are read at first use: hparams files build this module before the
        # recipe has prepared them.
        self.csv_files = {"noise": noise_csv, "rir": rir_csv, "babble": babble_csv}
        self._lists = {}
        self.snr = (float(snr_low), float(snr_high))
        self.babble_snr = (float(babble_snr_low), float(babble_snr_high))
        self.babble_count = int(babble_count)
        self.sample_rate = sample_rate
        weights = [
            clean_weight,
            noise_weight if (noise_csv or babble_csv) else 0.0,
            reverb_weight if rir_csv else 0.0,
        ]
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"branch weights must be >= 0 with a positive sum, got {weights}")
        self.register_buffer(
            "probs", torch.tensor(weights, dtype=torch.float) / sum(weights), persistent=False
        )
        self._rir_cache = {}

    def _list(self, kind):
        """(path, duration) of the files of a list, read once."""
        if kind not in self._lists:
            csv_file = self.csv_files[kind]
            rows = read_csv(csv_file) if csv_file else []
            if csv_file and not rows:
                raise ValueError(f"{kind} list {csv_file} is empty")
            self._lists[kind] = [(row["wav"], float(row["duration"])) for row in rows]
        return self._lists[kind]

    def forward(self, wavs, lengths=None):
        """Augments a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms ``[B, S]``.
        lengths : torch.Tensor, optional
            Relative lengths ``[B]`` in (0, 1] (default: all 1).

        Returns
        -------
        torch.Tensor
            Augmented waveforms ``[B, S]``, same padding.
        """
        if lengths is None:
            lengths = torch.ones(wavs.shape[0], device=wavs.device)
        choices = torch.multinomial(self.probs, wavs.shape[0], replacement=True).tolist()
        if all(c == 0 for c in choices):
            return wavs
        out = wavs.clone()
        num_samples = torch.round(lengths * wavs.shape[1]).long().clamp(min=1).tolist()
        for i, (choice, n) in enumerate(zip(choices, num_samples)):
            if choice == 1:
                out[i, :n] = self.add_noise(wavs[i, :n])
            elif choice == 2:
                out[i, :n] = reverberate(wavs[i, :n], self._random_rir().to(wavs.device))
        return out

    def add_noise(self, wav):
        """Adds a random noise (or babble, when a babble list is given) to one waveform.

        Arguments
        ---------
        wav : torch.Tensor
            Waveform ``[S]``.

        Returns
        -------
        torch.Tensor
            Noisy waveform ``[S]``.
        """
        noises, babble = self._list("noise"), self._list("babble")
        use_babble = bool(babble) and (not noises or torch.rand(()) < 0.5)
        if use_babble:
            noise = sum(
                self._unit_power(self._segment(babble, wav.numel()))
                for _ in range(self.babble_count)
            )
            low, high = self.babble_snr
        else:
            noise = self._segment(noises, wav.numel())
            low, high = self.snr
        snr = low + (high - low) * torch.rand(()).item()
        noise = noise.to(wav.device)
        noise_rms = _rms(noise)
        if noise_rms == 0:  # a silent stretch of noise: nothing to add
            return wav
        return wav + noise * (_rms(wav) / noise_rms) * 10.0 ** (-snr / 20.0)

    @staticmethod
    def _unit_power(wav):
        return wav / _rms(wav).clamp(min=1e-8)

    def _segment(self, items, length):
        """A random segment of ``length`` samples of a random file of ``items``."""
        path, duration = items[torch.randint(len(items), ()).item()]
        need = length / self.sample_rate
        if duration > need:
            offset = (duration - need) * torch.rand(()).item()
            wav = load_audio(path, self.sample_rate, offset=offset, duration=need)
        else:
            wav = load_audio(path, self.sample_rate)
        return _fit_length(wav, length)

    def _random_rir(self):
        rirs = self._list("rir")
        path, _ = rirs[torch.randint(len(rirs), ()).item()]
        if path not in self._rir_cache:
            self._rir_cache[path] = load_audio(path, self.sample_rate)
        return self._rir_cache[path]
