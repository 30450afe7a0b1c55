"""The log-mel front end of SpeechBrain's ASR Conformers, batched with relative lengths.

Example
-------
>>> frontend = ConformerFbank(n_mels=40)
>>> feats, lengths = frontend(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
>>> feats.shape
torch.Size([2, 101, 40])
"""

import os

import torch
from speechbrain.lobes.features import Fbank

from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import check_waveform_batch
from speechbrain_w2vbert_sv.utils import lengths_to_mask, load_checkpoint_file


class ConformerFbank(torch.nn.Module):
    """Fbank features + mean/variance normalisation: the ASR Conformer's front end.

    The features are SpeechBrain's ``Fbank`` (the LibriSpeech Conformer recipes use
    80 mel bins, FFT 400, 25 ms windows, 10 ms hop). Normalisation is per utterance
    (``sentence``) or with global statistics (``global``) as SpeechBrain's
    ``InputNormalization`` computes them in ASR training; the global statistics are
    buffers here, so they travel inside the model's state dict (an
    ``InputNormalization`` keeps them outside it), and come from an ASR checkpoint's
    ``normalizer.ckpt`` through :meth:`load_normalizer`.

    Arguments
    ---------
    sample_rate : int
        Sample rate of the input waveforms.
    n_fft : int
        FFT size.
    n_mels : int
        Number of mel bins.
    win_length : float
        Window length in ms.
    hop_length : float
        Hop in ms.
    norm_type : str
        ``"sentence"`` (per-utterance statistics), ``"global"`` (loaded statistics)
        or ``"none"``.
    epsilon : float
        Floor of the standard deviation.

    Example
    -------
    >>> frontend = ConformerFbank(n_mels=40)
    >>> feats, lengths = frontend(torch.randn(2, 8000), torch.tensor([1.0, 0.5]))
    >>> feats.shape
    torch.Size([2, 51, 40])
    >>> bool(feats[1, :26].mean(0).abs().max() < 1e-4)  # statistics of the 26 valid frames
    True
    """

    NORM_TYPES = ("sentence", "global", "none")

    def __init__(
        self,
        sample_rate=16000,
        n_fft=400,
        n_mels=80,
        win_length=25,
        hop_length=10,
        norm_type="sentence",
        epsilon=1e-10,
    ):
        super().__init__()
        if norm_type not in self.NORM_TYPES:
            raise ValueError(
                f"ConformerFbank: norm_type must be one of {self.NORM_TYPES}, got {norm_type!r}"
            )
        self.norm_type = norm_type
        self.epsilon = epsilon
        self.n_fft = n_fft
        self.fbank = Fbank(
            sample_rate=sample_rate,
            n_fft=n_fft,
            n_mels=n_mels,
            win_length=win_length,
            hop_length=hop_length,
        )
        self.register_buffer("global_mean", torch.zeros(n_mels))
        self.register_buffer("global_std", torch.ones(n_mels))
        self.register_buffer("global_count", torch.zeros((), dtype=torch.long))

    @property
    def n_mels(self):
        """Number of mel bins of the features."""
        return self.global_mean.numel()

    def load_normalizer(self, normalizer):
        """Global statistics from a SpeechBrain ``InputNormalization`` checkpoint.

        Arguments
        ---------
        normalizer : str, os.PathLike or dict
            A ``normalizer.ckpt`` file, or the dict it holds (``count``,
            ``glob_mean``, ``glob_std``).

        Returns
        -------
        bool
            Whether global statistics were loaded (False: the normaliser of the
            checkpoint computed no global statistics, e.g. per-sentence ASR training).

        Raises
        ------
        ValueError
            One line naming the file: unreadable, holding more than tensors and plain
            containers (it is not unpickled), or statistics that do not fit.

        Example
        -------
        >>> frontend = ConformerFbank(n_mels=2, norm_type="global")
        >>> file = getfixture("tmp_path") / "normalizer.ckpt"
        >>> torch.save({"count": 5, "glob_mean": torch.ones(1, 2),
        ...             "glob_std": torch.ones(1, 2)}, file)
        >>> frontend.load_normalizer(file), frontend.global_mean.tolist()
        (True, [1.0, 1.0])
        """
        name = "normalizer"
        if not isinstance(normalizer, dict):
            name = os.fspath(normalizer)
            # Tensors and plain containers only: a file from elsewhere must not run code.
            normalizer = load_checkpoint_file(name)
        if not isinstance(normalizer, dict):
            raise ValueError(
                f"{name}: not a normaliser checkpoint (a {type(normalizer).__name__}, "
                "expected the dict of SpeechBrain's InputNormalization)"
            )
        count = int(normalizer.get("count", 0))
        mean = torch.as_tensor(normalizer.get("glob_mean", torch.empty(0))).flatten()
        std = torch.as_tensor(normalizer.get("glob_std", torch.empty(0))).flatten()
        if count == 0 or mean.numel() == 0:
            if self.norm_type == "global":
                raise ValueError(
                    f"{name}: holds no global statistics (count {count}), but this "
                    "front end normalises globally: set norm_type to 'sentence' as the "
                    "ASR model was trained"
                )
            return False
        if self.norm_type != "global":
            raise ValueError(
                f"{name}: holds global statistics ({count} frames), but this front end "
                f"normalises with norm_type={self.norm_type!r}: set norm_type to "
                "'global' to feed the ASR encoder the features it was trained on"
            )
        if mean.shape != self.global_mean.shape or std.shape != self.global_std.shape:
            raise ValueError(
                f"{name}: statistics of shape {tuple(mean.shape)} do not fit a front "
                f"end with {self.n_mels} mel bins"
            )
        self.global_mean.copy_(mean)
        self.global_std.copy_(std)
        self.global_count.fill_(count)
        return True

    def forward(self, wavs, wav_lens=None):
        """Normalised Fbank features of a padded batch of waveforms.

        Arguments
        ---------
        wavs, wav_lens : torch.Tensor
            Waveforms [B, S] and their relative lengths [B] (optional: all full length).

        Returns
        -------
        feats : torch.Tensor
            Features [B, T, n_mels].
        lengths : torch.Tensor
            Relative lengths [B] of the feature sequences.
        """
        # Clear errors for bad input; the STFT's reflection padding needs n_fft/2 samples.
        wavs, _ = check_waveform_batch(wavs, wav_lens, min_samples=self.n_fft // 2 + 1)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        feats = self.fbank(wavs)
        if self.norm_type == "global":
            if int(self.global_count) == 0:
                raise ValueError(
                    "ConformerFbank(norm_type='global') has no statistics: load them "
                    "with load_normalizer() or load_asr_checkpoint(..., frontend=...)"
                )
            mean, std = self.global_mean, self.global_std
        elif self.norm_type == "sentence":
            mask = lengths_to_mask(wav_lens, feats.shape[1])[:, :, None]
            count = mask.sum(dim=1, keepdim=True)
            mean = (feats * mask).sum(dim=1, keepdim=True) / count
            var = ((feats - mean) * mask).pow(2).sum(dim=1, keepdim=True) / count
            std = var.sqrt()
        else:
            return feats, wav_lens
        return (feats - mean) / std.clamp(min=self.epsilon), wav_lens
