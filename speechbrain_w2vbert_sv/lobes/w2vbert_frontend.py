"""The w2v-BERT 2.0 front end in torch: Kaldi-style log-mel fbank, per-utterance
normalisation and frame stacking, batched and on any device.

It computes the features of ``transformers.SeamlessM4TFeatureExtractor`` (the
extractor that ships with ``facebook/w2v-bert-2.0``) without its numpy loop over
utterances, and describes padding with SpeechBrain relative lengths.

Authors
 * speechbrain-w2vbert-sv contributors
"""

import torch

from speechbrain_w2vbert_sv.utils import recipe_lengths

__all__ = [
    "W2VBertFbank",
    "W2VBertFeatureNormalization",
    "W2VBertLogMel",
    "check_waveform_batch",
    "normalize_and_stack",
    "num_fbank_frames",
    "num_output_frames",
]


def num_fbank_frames(num_samples, win_length=400, hop_length=160):
    """Number of fbank frames (before stacking) for a number of samples.

    Frames are not centred (Kaldi ``snip_edges``): a frame is kept only when all
    its ``win_length`` samples exist.

    Arguments
    ---------
    num_samples : int or torch.Tensor
        Number(s) of samples; a tensor must hold integers.
    win_length : int
        Analysis window in samples.
    hop_length : int
        Hop between frames in samples.

    Returns
    -------
    int or torch.Tensor
        Frame count(s), same type as ``num_samples``; 0 when shorter than a window.

    Example
    -------
    >>> num_fbank_frames(16000)
    98
    >>> num_fbank_frames(torch.tensor([399, 400, 559, 560]))
    tensor([0, 1, 1, 2])
    """
    if isinstance(num_samples, torch.Tensor):
        frames = torch.div(num_samples - win_length, hop_length, rounding_mode="floor")
        return (frames + 1).clamp_min(0)
    if num_samples < win_length:
        return 0
    return 1 + (num_samples - win_length) // hop_length


def num_output_frames(num_samples, win_length=400, hop_length=160, stride=2):
    """Number of valid output frames (after stacking ``stride`` frames).

    An incomplete last group of frames (an odd frame count for stride 2) is not
    an output frame: ``SeamlessM4TFeatureExtractor`` zero-pads it and marks it
    out of its ``attention_mask``, so the w2v-BERT encoder never uses it.

    Arguments
    ---------
    num_samples : int or torch.Tensor
        Number(s) of samples; a tensor must hold integers.
    win_length : int
        Analysis window in samples.
    hop_length : int
        Hop between frames in samples.
    stride : int
        Number of fbank frames stacked into one output frame.

    Returns
    -------
    int or torch.Tensor
        Output frame count(s), same type as ``num_samples``.

    Example
    -------
    >>> num_output_frames(48000)
    149
    >>> num_output_frames(torch.tensor([559, 560, 720, 880]))
    tensor([0, 1, 1, 2])
    """
    frames = num_fbank_frames(num_samples, win_length, hop_length)
    if isinstance(frames, torch.Tensor):
        return torch.div(frames, stride, rounding_mode="floor")
    return frames // stride


def check_waveform_batch(wavs, wav_lens=None, min_samples=1, name="wavs"):
    """Validates a padded waveform batch and its relative lengths.

    A 1-D waveform ``[samples]`` is accepted as a batch of one. Samples of the
    padding (beyond each utterance's length) are not checked.

    Arguments
    ---------
    wavs : torch.Tensor
        Floating-point waveforms, ``[batch, samples]`` (or ``[samples]``).
    wav_lens : torch.Tensor, optional
        Relative lengths ``[batch]`` in (0, 1], fraction of ``wavs.shape[-1]``;
        None means every utterance fills the batch.
    min_samples : int
        Fewest valid samples an utterance may have.
    name : str
        Name of the waveform argument, used in error messages.

    Returns
    -------
    wavs : torch.Tensor
        The waveforms as ``[batch, samples]`` (a view of the input).
    num_samples : torch.Tensor
        Valid samples per utterance, ``[batch]`` int64 on the device of ``wavs``
        (``round(wav_lens * samples)``, the SpeechBrain convention).

    Raises
    ------
    ValueError
        Wrong rank or dtype, bad lengths, non-finite samples, or an utterance
        shorter than ``min_samples``; the message names the problem.

    Example
    -------
    >>> wavs, num_samples = check_waveform_batch(
    ...     torch.zeros(2, 1000), torch.tensor([1.0, 0.6]), min_samples=560
    ... )
    >>> num_samples
    tensor([1000,  600])
    >>> check_waveform_batch(torch.zeros(2, 1, 1000))
    Traceback (most recent call last):
    ...
    ValueError: wavs must be [batch, samples] ...
    """
    if not isinstance(wavs, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(wavs).__name__}")
    if wavs.dim() == 1:
        wavs = wavs.unsqueeze(0)
    elif wavs.dim() != 2:
        hint = (
            " For multi-channel audio [batch, channels, samples], downmix first "
            "(e.g. wavs.mean(dim=1)) or pick one channel."
            if wavs.dim() == 3
            else ""
        )
        raise ValueError(
            f"{name} must be [batch, samples] (or [samples] for one utterance), "
            f"got a {wavs.dim()}-D tensor of shape {tuple(wavs.shape)}.{hint}"
        )
    if not wavs.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor with samples in [-1, 1], "
            f"got {wavs.dtype} (convert 16-bit PCM with wavs.float() / 32768)"
        )
    batch, samples = wavs.shape
    if batch == 0 or samples == 0:
        raise ValueError(f"{name} is empty (shape {tuple(wavs.shape)})")

    if wav_lens is None:
        num_samples = torch.full((batch,), samples, dtype=torch.long, device=wavs.device)
    else:
        # A few numbers: checked and rounded on the CPU in float64.
        wav_lens = torch.as_tensor(wav_lens).detach().cpu()
        if wav_lens.shape != (batch,):
            raise ValueError(
                f"wav_lens must have shape [batch] = ({batch},) matching {name}, "
                f"got {tuple(wav_lens.shape)}"
            )
        if wav_lens.is_complex() or wav_lens.dtype == torch.bool:
            raise ValueError(f"wav_lens must be real numbers, got {wav_lens.dtype}")
        wav_lens = wav_lens.double()
        bad = ~((wav_lens > 0) & (wav_lens <= 1))  # also catches NaN
        if bad.any():
            idx = int(bad.nonzero()[0, 0])
            raise ValueError(
                "wav_lens must be relative lengths in (0, 1], "
                f"got {wav_lens[idx].item()} for utterance {idx}"
            )
        num_samples = torch.round(wav_lens * samples).long().clamp_(1, samples)
        num_samples = num_samples.to(wavs.device)

    short = num_samples < min_samples
    if short.any():
        idx = int(short.nonzero()[0, 0])
        raise ValueError(
            f"utterance {idx} of {name} has {int(num_samples[idx])} samples, too "
            f"short: at least {min_samples} samples are needed"
        )

    # A sum is finite for finite samples (bar overflow): a cheap first test.
    if not torch.isfinite(wavs.sum()):
        valid = torch.arange(samples, device=wavs.device) < num_samples[:, None]
        bad = (~torch.isfinite(wavs) & valid).any(dim=1)
        if bad.any():
            idx = bad.nonzero()[:, 0].tolist()
            raise ValueError(f"{name} has NaN or Inf samples in utterance(s) {idx}")
    return wavs, num_samples


def normalize_and_stack(mel, num_frames, stride=2, normalize=True):
    """Per-utterance normalisation of each mel bin, then ``stride`` frames stacked.

    The second half of :class:`W2VBertFbank`: statistics over each utterance's
    ``num_frames`` valid frames (mean, unbiased variance, ``+1e-7``), frames beyond
    them and an incomplete last group of frames zeroed, consecutive frames stacked.

    Arguments
    ---------
    mel : torch.Tensor
        Log-mel energies ``[batch, frames, num_mel_bins]``.
    num_frames : torch.Tensor
        Valid frames per utterance ``[batch]`` (integers, at least 2 with
        ``normalize``).
    stride : int
        Frames stacked into one output frame.
    normalize : bool
        Normalise each mel bin over each utterance's valid frames.

    Returns
    -------
    feats : torch.Tensor
        ``[batch, frames // stride, num_mel_bins * stride]``.
    feat_lens : torch.Tensor
        ``[batch]`` relative lengths of the stacked sequences.

    Example
    -------
    >>> mel = torch.randn(2, 9, 4)
    >>> feats, lens = normalize_and_stack(mel, torch.tensor([9, 6]))
    >>> feats.shape, lens
    (torch.Size([2, 4, 8]), tensor([1.0000, 0.7500]))
    >>> bool(feats[1, 3:].abs().sum() == 0)
    True
    """
    batch, frames, num_mel_bins = mel.shape
    out_frames = frames // stride
    num_frames = num_frames.to(mel.device)
    num_out = torch.div(num_frames, stride, rounding_mode="floor")
    full = bool((num_frames == frames).all())

    if not full:
        # Frames of the padding are left out of the statistics, and zeroed
        # with the incomplete last group of frames.
        time_idx = torch.arange(frames, device=mel.device)
        valid = (time_idx < num_frames[:, None])[..., None]
        mel = torch.where(valid, mel, 0.0)
    feats = mel
    if normalize:
        count = num_frames.to(mel.dtype)[:, None, None]
        centred = mel - mel.sum(dim=1, keepdim=True) / count
        if not full:
            centred = centred * valid
        var = centred.square().sum(dim=1, keepdim=True) / (count - 1)
        feats = centred * torch.rsqrt(var + 1e-7)
    if not full:
        feats = feats * (time_idx < num_out[:, None] * stride)[..., None]

    feats = feats[:, : out_frames * stride].reshape(batch, out_frames, stride * num_mel_bins)
    feat_lens = num_out.to(feats.dtype) / out_frames
    return feats, feat_lens


def _kaldi_mel(freq):
    return 1127.0 * torch.log1p(freq / 700.0)


class W2VBertFbank(torch.nn.Module):
    """The w2v-BERT 2.0 front end: Kaldi fbank, per-utterance normalisation per
    mel bin, then ``stride`` consecutive frames stacked.

    It equals ``transformers.SeamlessM4TFeatureExtractor`` (default settings)
    applied to each utterance alone: the waveform scaled to 16-bit range,
    ``win_length``-sample frames every ``hop_length`` samples (no centring),
    per-frame DC removal, pre-emphasis, povey window, ``n_fft``-point power
    spectrum, Kaldi mel filters (``min_frequency`` to Nyquist), natural log
    (floored at float32 eps), normalisation of each mel bin over the
    utterance's frames (mean, unbiased variance, ``+1e-7``), and stacking.
    An incomplete last group of frames is dropped (the extractor masks it out).

    The spectrum is taken in float64: log-mel bins far below a frame's loudest
    bins (band-limited or resampled audio) lose their precision in a float32 FFT
    (up to 3e-3 off on real clips, against 1e-5 here). Devices without float64
    (MPS) fall back to float32. Features are float64 for float64 input (used as
    is, where the extractor rounds to float32), else float32. The computation
    is differentiable with respect to the waveform.

    Arguments
    ---------
    sample_rate : int
        Sampling rate in Hz (sets the mel filters; window and hop are in samples,
        as in the extractor).
    num_mel_bins : int
        Number of mel filters.
    stride : int
        Frames stacked into one output frame; output size ``num_mel_bins * stride``.
    win_length : int
        Analysis window in samples (25 ms at 16 kHz).
    hop_length : int
        Hop between frames in samples (10 ms at 16 kHz).
    n_fft : int
        FFT size.
    preemphasis : float
        Pre-emphasis coefficient.
    min_frequency : float
        Lower edge of the first mel filter in Hz.
    normalize : bool
        Normalise each mel bin over each utterance's frames.

    Example
    -------
    >>> fbank = W2VBertFbank()
    >>> wavs = torch.randn(2, 16000) * 0.1
    >>> feats, feat_lens = fbank(wavs, torch.tensor([1.0, 0.5]))
    >>> feats.shape
    torch.Size([2, 49, 160])
    >>> feat_lens
    tensor([1.0000, 0.4898])
    >>> fbank.num_output_frames(8000)
    24
    """

    # Frames per block of the spectrum computation, by device type (other: 32768).
    block_frames = {"cpu": 2048}

    def __init__(
        self,
        sample_rate=16000,
        num_mel_bins=80,
        stride=2,
        win_length=400,
        hop_length=160,
        n_fft=512,
        preemphasis=0.97,
        min_frequency=20.0,
        normalize=True,
    ):
        super().__init__()
        if not 2 <= win_length <= n_fft:
            raise ValueError(f"need 2 <= win_length <= n_fft, got {win_length}, {n_fft}")
        if hop_length < 1 or stride < 1 or num_mel_bins < 1:
            raise ValueError("hop_length, stride and num_mel_bins must be positive")
        if not 0 <= min_frequency < sample_rate // 2:
            raise ValueError(f"min_frequency must be in [0, {sample_rate // 2}) Hz")
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.stride = stride
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.preemphasis = preemphasis
        self.normalize = normalize
        # Unbiased variance needs two frames, stacking needs `stride`.
        self.min_frames = max(stride, 2) if normalize else stride
        self.min_samples = win_length + (self.min_frames - 1) * hop_length

        # Povey window, zero-padded to the FFT size. Its first sample is zero,
        # which lets pre-emphasis run once on the whole waveform (see log_mel).
        window = torch.hann_window(win_length, periodic=False, dtype=torch.float64)
        # Scaled by 2**15: Kaldi works on the 16-bit integer scale (exact in floats).
        self.window = torch.nn.functional.pad(window.pow(0.85), (0, n_fft - win_length)) * 32768.0

        # Kaldi mel filters: triangles in mel space over the FFT bin frequencies.
        bins = n_fft // 2 + 1
        bin_mel = _kaldi_mel(torch.arange(bins, dtype=torch.float64) * sample_rate / n_fft)
        edges = torch.linspace(
            _kaldi_mel(torch.tensor(float(min_frequency), dtype=torch.float64)).item(),
            _kaldi_mel(torch.tensor(float(sample_rate // 2), dtype=torch.float64)).item(),
            num_mel_bins + 2,
            dtype=torch.float64,
        )
        rising = (bin_mel[:, None] - edges[:-2]) / (edges[1:-1] - edges[:-2])
        falling = (edges[2:] - bin_mel[:, None]) / (edges[2:] - edges[1:-1])
        mel = torch.minimum(rising, falling).clamp_min(0.0)
        # Only FFT bins inside some filter are computed further.
        used = (mel > 0).any(dim=1).nonzero()[:, 0]
        self.first_bin, self.end_bin = int(used[0]), int(used[-1]) + 1
        self.mel_filters = mel[self.first_bin : self.end_bin]
        self._cache = {}

    def num_output_frames(self, num_samples):
        """Number of valid output frames for a number of samples.

        Arguments
        ---------
        num_samples : int or torch.Tensor
            Number(s) of samples.

        Returns
        -------
        int or torch.Tensor
            Output frames (``stride`` stacked fbank frames each).
        """
        return num_output_frames(num_samples, self.win_length, self.hop_length, self.stride)

    def _spectrum_dtype(self, device):
        return torch.float32 if device.type == "mps" else torch.float64

    def log_mel(self, wavs):
        """Log-mel energies of every frame of a batch (no normalisation).

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` floating-point waveforms in [-1, 1], finite
            everywhere (a frame's FFT buffer reads past its window).

        Returns
        -------
        torch.Tensor
            ``[batch, frames, num_mel_bins]`` in float64 for float64 input, else
            float32.
        """
        batch, samples = wavs.shape
        win, hop, a = self.win_length, self.hop_length, self.preemphasis
        frames = num_fbank_frames(samples, win, hop)
        dtype = self._spectrum_dtype(wavs.device)
        out_dtype = torch.float64 if wavs.dtype == torch.float64 else torch.float32
        window, mel_filters = self._constants(wavs.device, dtype, out_dtype)
        # The waveform in the spectrum dtype, zero-padded so that every frame's
        # FFT buffer lies inside it (one copy, no separate padding pass).
        length = max(samples, (frames - 1) * hop + self.n_fft + 1)
        x = wavs.new_empty(batch, length, dtype=dtype)
        x[:, :samples] = wavs
        x[:, samples:] = 0.0
        dc = x[:, :samples].unfold(1, win, hop).mean(dim=-1)  # [batch, frames]

        # Pre-emphasis y[i] = d[i] - a*d[i-1] of the DC-removed frame d = x - dc
        # equals (x[i] - a*x[i-1]) - (1-a)*dc for i >= 1, so it runs once on the
        # waveform; Kaldi's y[0] = (1-a)*d[0] meets a zero window sample. The FFT
        # buffer holds y[1:] then y[0]: a circular shift, which leaves the power
        # spectrum unchanged (the window is rolled to match).
        emph = torch.add(x[:, 1:], x[:, :-1], alpha=-a)
        framed = emph.unfold(1, self.n_fft, hop)  # [batch, >= frames, n_fft]
        dc = dc.mul_(1.0 - a)[..., None]

        # Blocks of frames keep the float64 buffers small (cache-resident on CPU);
        # a block is a run of whole utterances or a stretch of one, so that its
        # mel energies go straight into their contiguous slice of the output.
        block = self.block_frames.get(wavs.device.type, 32768)
        mel = wavs.new_empty(batch, frames, self.num_mel_bins, dtype=out_dtype)
        if frames >= block:
            starts = range(0, frames, block)
            pieces = [(b, b + 1, s, min(frames, s + block)) for b in range(batch) for s in starts]
        else:
            step = block // frames
            pieces = [(b, min(batch, b + step), 0, frames) for b in range(0, batch, step)]
        for b0, b1, s0, s1 in pieces:
            chunk = torch.sub(framed[b0:b1, s0:s1], dc[b0:b1, s0:s1]).mul_(window)
            bins = torch.fft.rfft(chunk)[..., self.first_bin : self.end_bin]
            parts = torch.view_as_real(bins).to(out_dtype)
            power = parts[..., 0].square().addcmul_(parts[..., 1], parts[..., 1])
            mel[b0:b1, s0:s1] = power @ mel_filters
        return mel.clamp_min_(torch.finfo(torch.float32).eps).log_()

    def _constants(self, device, dtype, out_dtype):
        """The window and the mel filters on a device, cached. They are plain
        float64 attributes rather than buffers, so that ``module.half()`` or
        ``module.to(dtype)`` cannot round them."""
        key = (device, dtype, out_dtype)
        if key not in self._cache:
            self._cache[key] = (
                self.window.roll(-1).to(dtype).to(device),
                self.mel_filters.to(out_dtype).to(device),
            )
        return self._cache[key]

    def forward(self, wavs, wav_lens=None):
        """Computes the stacked, normalised fbank features of a padded batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` floating-point waveforms in [-1, 1] at
            ``sample_rate`` (``[samples]`` is a batch of one).
        wav_lens : torch.Tensor, optional
            ``[batch]`` relative lengths in (0, 1]; None: all full length.
            Samples beyond an utterance's length are ignored (even NaN).

        Returns
        -------
        feats : torch.Tensor
            ``[batch, frames, num_mel_bins * stride]``, zero beyond each
            utterance's frames; float64 for float64 input, else float32.
        feat_lens : torch.Tensor
            ``[batch]`` relative lengths of the feature sequences (valid
            frames / frames), same dtype as ``feats``.
        """
        wavs, num_samples = check_waveform_batch(wavs, wav_lens, self.min_samples)
        batch, samples = wavs.shape
        if bool((num_samples < samples).any()):
            # Zero the padding: a frame's FFT buffer reaches past its window
            # (with zero weights, but 0 * NaN is NaN).
            in_wav = torch.arange(samples, device=wavs.device) < num_samples[:, None]
            wavs = torch.where(in_wav, wavs, 0.0)
        # The mel matmul stays in full precision under a caller's autocast.
        with torch.autocast(wavs.device.type, enabled=False):
            mel = self.log_mel(wavs)
        num_frames = num_fbank_frames(num_samples, self.win_length, self.hop_length)
        return normalize_and_stack(mel, num_frames, self.stride, self.normalize)


class W2VBertLogMel(torch.nn.Module):
    """The ``compute_features`` step of SpeechBrain's speaker recipes for w2v-BERT:
    the Kaldi log-mel energies of :class:`W2VBertFbank`, every frame, not normalised.

    SpeechBrain's scripts call ``compute_features(wavs)`` without lengths, then
    ``mean_var_norm(feats, lens)``: the per-utterance statistics need the lengths,
    so they are :class:`W2VBertFeatureNormalization`'s job. Frames are computed
    one by one, so an utterance's frames are the same padded or alone.

    Arguments
    ---------
    sample_rate, num_mel_bins, win_length, hop_length, n_fft, preemphasis, min_frequency
        As in :class:`W2VBertFbank`.

    Example
    -------
    >>> compute_features = W2VBertLogMel()
    >>> compute_features(torch.randn(2, 16000) * 0.1).shape
    torch.Size([2, 98, 80])
    """

    def __init__(
        self,
        sample_rate=16000,
        num_mel_bins=80,
        win_length=400,
        hop_length=160,
        n_fft=512,
        preemphasis=0.97,
        min_frequency=20.0,
    ):
        super().__init__()
        self.fbank = W2VBertFbank(
            sample_rate=sample_rate,
            num_mel_bins=num_mel_bins,
            stride=1,
            win_length=win_length,
            hop_length=hop_length,
            n_fft=n_fft,
            preemphasis=preemphasis,
            min_frequency=min_frequency,
            normalize=False,
        )

    def forward(self, wavs, wav_lens=None):
        """Log-mel energies of a padded batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` waveforms in [-1, 1] (SpeechBrain pads with zeros).
        wav_lens : torch.Tensor, optional
            Ignored: every frame is returned (accepted for callers that pass it).

        Returns
        -------
        torch.Tensor
            ``[batch, frames, num_mel_bins]``.
        """
        del wav_lens  # frames are per-frame computations; the normaliser masks
        fbank = self.fbank
        wavs, _ = check_waveform_batch(wavs, min_samples=fbank.win_length + fbank.hop_length)
        with torch.autocast(wavs.device.type, enabled=False):
            return fbank.log_mel(wavs)


class W2VBertFeatureNormalization(torch.nn.Module):
    """The ``mean_var_norm`` step of SpeechBrain's speaker recipes for w2v-BERT:
    each mel bin normalised over each utterance's frames, then ``stride`` frames
    stacked (the rest of :class:`W2VBertFbank`, see :func:`normalize_and_stack`).

    Lengths are relative, as everywhere in SpeechBrain: an utterance has
    ``round(length * frames)`` valid frames. Unpadded utterances get exactly the
    features of :class:`W2VBertFbank`; a padded one may count one frame more or
    less than its waveform has, the precision of a relative length.

    Arguments
    ---------
    stride : int
        Frames stacked into one output frame.
    normalize : bool
        Normalise each mel bin (False: stacking only).

    Example
    -------
    >>> wavs = torch.randn(2, 16000) * 0.1
    >>> mel = W2VBertLogMel()(wavs)
    >>> feats = W2VBertFeatureNormalization()(mel, torch.ones(2))
    >>> bool(torch.allclose(feats, W2VBertFbank()(wavs)[0], atol=1e-5))
    True
    """

    def __init__(self, stride=2, normalize=True):
        super().__init__()
        if stride < 1:
            raise ValueError(f"stride must be positive, got {stride}")
        self.stride = stride
        self.normalize = normalize

    def forward(self, feats, lengths=None):
        """Normalised, stacked features.

        Arguments
        ---------
        feats : torch.Tensor
            ``[batch, frames, num_mel_bins]`` log-mel energies.
        lengths : torch.Tensor, optional
            ``[batch]`` relative lengths (None: all full length).

        Returns
        -------
        torch.Tensor
            ``[batch, frames // stride, num_mel_bins * stride]``.
        """
        if feats.dim() != 3:
            raise ValueError(
                f"W2VBertFeatureNormalization takes [batch, frames, mel bins] log-mel "
                f"features (W2VBertLogMel's output), got shape {tuple(feats.shape)}"
            )
        batch, frames, _ = feats.shape
        lengths = recipe_lengths(lengths, batch, feats.device)
        num_frames = torch.round(lengths.double() * frames).long().clamp(1, frames)
        fewest = max(self.stride, 2) if self.normalize else self.stride
        if bool((num_frames < fewest).any()):
            raise ValueError(
                f"an utterance has {int(num_frames.min())} frames: at least {fewest} are "
                "needed (normalisation and stacking)"
            )
        return normalize_and_stack(feats, num_frames, self.stride, self.normalize)[0]
