"""A CTC ASR Conformer: SpeechBrain's Conformer encoder with a linear CTC layer.

Its front end and encoder load from SpeechBrain ASR checkpoints with
:func:`~speechbrain_w2vbert_sv.lobes.asr_checkpoint.load_asr_checkpoint`.
"""

import collections

import torch
from speechbrain.decoders.ctc import ctc_greedy_decode
from speechbrain.nnet.linear import Linear

from speechbrain_w2vbert_sv.lobes.asr_checkpoint import load_asr_checkpoint

CTCOutput = collections.namedtuple(
    "CTCOutput", ["log_probs", "encoder_out", "hidden_states", "lengths"]
)


class ConformerCTC(torch.nn.Module):
    """A CTC ASR Conformer: front end, encoder and CTC output layer.

    The ASR model a speaker teacher or a speaker adaptor builds on. ``ctc_lin`` is a
    SpeechBrain ``Linear`` like the recipes' (keys ``w.weight``/``w.bias``).

    Arguments
    ---------
    frontend : ConformerFbank
        Waveforms -> features.
    backbone : ConformerBackbone
        The encoder.
    vocab_size : int
        CTC outputs (blank included).
    freeze : bool
        Freeze everything (a teacher, or the ASR model under a speaker adaptor): no
        gradients and always in eval mode.

    Example
    -------
    >>> from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
    >>> from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
    >>> asr = ConformerCTC(
    ...     ConformerFbank(n_mels=40),
    ...     ConformerBackbone(n_mels=40, cnn_channels=(8, 8), d_model=32, nhead=4,
    ...                       num_layers=2, d_ffn=64, kernel_size=7),
    ...     vocab_size=5, freeze=True)
    >>> out = asr(torch.randn(2, 8000), torch.tensor([1.0, 0.5]))
    >>> out.log_probs.shape, out.hidden_states.shape
    (torch.Size([2, 13, 5]), torch.Size([3, 2, 13, 32]))
    """

    def __init__(self, frontend, backbone, vocab_size, freeze=False):
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone
        self.ctc_lin = Linear(input_size=backbone.hidden_size, n_neurons=vocab_size)
        self.freeze = False
        if freeze:
            self.freeze_model()

    def freeze_model(self):
        """Freeze everything: no gradients, and eval mode from now on.

        Returns
        -------
        ConformerCTC
            This model.
        """
        self.freeze = self.backbone.freeze = True
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode=True):
        """Set the training mode; a frozen model stays in eval mode."""
        return super().train(mode and not self.freeze)

    def load_asr_checkpoint(self, checkpoint, **kwargs):
        """Load a SpeechBrain ASR checkpoint (see
        :func:`~speechbrain_w2vbert_sv.lobes.asr_checkpoint.load_asr_checkpoint`)."""
        return load_asr_checkpoint(checkpoint, model=self, **kwargs)

    def forward(self, wavs, wav_lens=None):
        """CTC log-probabilities and every hidden state of one encoder pass.

        Arguments
        ---------
        wavs, wav_lens : torch.Tensor
            Waveforms [B, S] and their relative lengths [B] (optional: all full length).

        Returns
        -------
        CTCOutput
            ``log_probs`` [B, T', V], ``encoder_out`` [B, T', D], ``hidden_states``
            [L + 1, B, T', D] and ``lengths`` [B].
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            feats, lengths = self.frontend(wavs, wav_lens)
            out = self.backbone.encode(feats, lengths)
            log_probs = torch.log_softmax(self.ctc_lin(out.encoder_out), dim=-1)
        return CTCOutput(log_probs, out.encoder_out, out.hidden_states, out.lengths)

    @staticmethod
    def greedy_decode(log_probs, lengths, blank_index=0):
        """Best-path CTC decoding (repeats merged, blanks removed): SpeechBrain's
        ``ctc_greedy_decode``, with the blank first by default as in SpeechBrain's ASR
        recipes (``ctc_greedy_decode`` defaults to the last index).

        Arguments
        ---------
        log_probs : torch.Tensor
            [B, T, V].
        lengths : torch.Tensor
            Relative lengths [B].
        blank_index : int
            Index of the blank.

        Returns
        -------
        list of list of int
            Token indices of each utterance.

        Example
        -------
        >>> frames = torch.tensor([[1, 1, 0, 1, 2, 2, 3], [2, 0, 2, 3, 3, 0, 0]])
        >>> log_probs = torch.nn.functional.one_hot(frames, 4).float().log()
        >>> ConformerCTC.greedy_decode(log_probs, torch.tensor([1.0, 4 / 7]))
        [[1, 1, 2, 3], [2, 2, 3]]
        """
        return ctc_greedy_decode(log_probs, lengths, blank_id=blank_index)
