"""The w2v-BERT front end written for graph export (ONNX): waveforms in, features out.

:class:`~speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertFbank` checks its input, branches on
tensor values and runs its FFT in blocks: none of that can be captured in a graph with
dynamic batch and length. :class:`GraphFbank` computes the same features with shape-only
operations: frames gathered by index, the power spectrum of the used FFT bins as two
float64 matrix products (a DFT restricted to those bins; ONNX Runtime has float64
``MatMul`` on every CPU) and the mel energies in float64 up to the log, and masks
instead of branches. Input checks stay with the
caller (:class:`~speechbrain_w2vbert_sv.inference.onnx.ONNXEmbeddingModel` runs
``check_waveform_batch``).
"""

import math

import torch


class GraphFbank(torch.nn.Module):
    """Stacked, normalised log-mel fbank of a padded batch, in export-friendly ops.

    Same features as the ``W2VBertFbank`` it is built from (same settings, float32
    output), for batches whose utterances have at least ``fbank.min_samples`` samples.

    Arguments
    ---------
    fbank : speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertFbank
        The front end whose settings and constants are used.

    Example
    -------
    >>> from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank
    >>> fbank = W2VBertFbank()
    >>> wavs, lens = torch.randn(2, 16000) * 0.1, torch.tensor([1.0, 0.6])
    >>> feats, feat_lens = GraphFbank(fbank)(wavs, lens)
    >>> expected, expected_lens = fbank(wavs, lens)
    >>> bool((feats - expected).abs().max() < 1e-3), bool(torch.equal(feat_lens, expected_lens))
    (True, True)
    """

    def __init__(self, fbank):
        super().__init__()
        self.win_length = fbank.win_length
        self.hop_length = fbank.hop_length
        self.n_fft = fbank.n_fft
        self.stride = fbank.stride
        self.num_mel_bins = fbank.num_mel_bins
        self.preemphasis = fbank.preemphasis
        self.normalize = fbank.normalize
        # The rolled window of W2VBertFbank.log_mel (pre-emphasised buffer y[1:], y[0])
        # folded into the DFT: cos/sin of the used bins times the window, float64.
        window = fbank.window.roll(-1)
        k = torch.arange(fbank.first_bin, fbank.end_bin, dtype=torch.float64)
        n = torch.arange(self.n_fft, dtype=torch.float64)
        angle = (2 * math.pi / self.n_fft) * torch.outer(n, k).remainder(self.n_fft)
        self.register_buffer("dft_cos", window[:, None] * torch.cos(angle), persistent=False)
        self.register_buffer("dft_sin", window[:, None] * torch.sin(angle), persistent=False)
        # float64 to the log: int8 quantization of a graph (ONNX Runtime) leaves float64
        # products alone, and the power spectrum's dynamic range needs more than 8 bits.
        self.register_buffer("mel_filters", fbank.mel_filters, persistent=False)

    def _apply(self, fn, *args, **kwargs):
        # The DFT must stay float64 under module.float() / .half(): keep the dtypes.
        dtypes = {name: buf.dtype for name, buf in self._buffers.items()}
        super()._apply(fn, *args, **kwargs)
        for name, dtype in dtypes.items():
            self._buffers[name] = self._buffers[name].to(dtype)
        return self

    def forward(self, wavs, wav_lens):
        """Features of a padded waveform batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` float32 waveforms in [-1, 1].
        wav_lens : torch.Tensor
            ``[batch]`` relative lengths in (0, 1].

        Returns
        -------
        feats : torch.Tensor
            ``[batch, frames, num_mel_bins * stride]`` float32, zero beyond each
            utterance's frames.
        feat_lens : torch.Tensor
            ``[batch]`` relative lengths of the feature sequences.
        """
        win, hop, a = self.win_length, self.hop_length, self.preemphasis
        samples = wavs.shape[1]
        num_samples = torch.round(wav_lens.double() * samples).long().clamp(1, samples)
        time_idx = torch.arange(samples, device=wavs.device)
        x = torch.where(time_idx < num_samples[:, None], wavs, 0.0).double()
        frames = (samples - win) // hop + 1
        # Every frame's FFT buffer (n_fft samples of the pre-emphasised signal, from
        # one sample after its start) lies inside the zero-padded waveform.
        x = torch.nn.functional.pad(x, (0, self.n_fft - win + 1))
        starts = torch.arange(frames, device=wavs.device)[:, None] * hop
        dc = x[:, starts + torch.arange(win, device=wavs.device)].mean(dim=-1)
        emph = x[:, 1:] - a * x[:, :-1]
        framed = emph[:, starts + torch.arange(self.n_fft, device=wavs.device)]
        framed = framed - (1.0 - a) * dc[..., None]
        power = (framed @ self.dft_cos).square() + (framed @ self.dft_sin).square()
        mel = power @ self.mel_filters
        mel = mel.clamp_min(torch.finfo(torch.float32).eps).log().float()

        num_frames = (torch.div(num_samples - win, hop, rounding_mode="floor") + 1).clamp_min(0)
        num_out = torch.div(num_frames, self.stride, rounding_mode="floor")
        frame_idx = torch.arange(frames, device=wavs.device)
        valid = (frame_idx < num_frames[:, None])[..., None]
        mel = mel * valid
        if self.normalize:
            count = num_frames.float()[:, None, None]
            centred = (mel - mel.sum(dim=1, keepdim=True) / count) * valid
            var = centred.square().sum(dim=1, keepdim=True) / (count - 1)
            mel = centred * torch.rsqrt(var + 1e-7)
        mel = mel * (frame_idx < num_out[:, None] * self.stride)[..., None]
        out_frames = frames // self.stride
        feats = mel[:, : out_frames * self.stride].reshape(
            wavs.shape[0], out_frames, self.stride * self.num_mel_bins
        )
        return feats, num_out.float() / out_frames
