"""Speaker adaptor: a small trainable head on a frozen ASR Conformer.

One encoder pass serves both tasks: the frozen CTC ASR model
(:class:`~speechbrain_w2vbert_sv.lobes.asr_conformer.ConformerCTC`) gives the CTC
log-probabilities from its final output, and the adaptor (an
:class:`~speechbrain_w2vbert_sv.lobes.heads.MFAHead`: Layer Adapters on every block output,
concatenation, attentive statistics pooling, embedding) reads the block outputs of the
same pass and gives the speaker embedding. Nothing flows back into the ASR model, so
its transcriptions are exactly those of the ASR model alone.

:class:`SpeakerAdaptorModel` is a speaker embedding model like
:class:`~speechbrain_w2vbert_sv.lobes.embedding_model.SpeakerEmbeddingModel`
(``forward(wavs, wav_lens) -> [B, 1, E]``, with ``frontend``, ``backbone`` and
``head``), so the speaker Brain, extraction and scoring use it as they are;
:meth:`SpeakerAdaptorModel.recognize_and_embed` gives both outputs of one pass.
:class:`~speechbrain_w2vbert_sv.inference.interface.ASRSpeakerRecognition` is the
pretrained interface around it: speaker embeddings and verification as the other speaker
models, plus transcription.

Example
-------
>>> from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
>>> from speechbrain_w2vbert_sv.lobes.asr_conformer import ConformerCTC
>>> from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
>>> from speechbrain_w2vbert_sv.lobes.heads import MFAHead
>>> asr = ConformerCTC(
...     ConformerFbank(n_mels=40),
...     ConformerBackbone(n_mels=40, cnn_channels=(8, 8), d_model=32, nhead=4,
...                       num_layers=2, d_ffn=64, kernel_size=7),
...     vocab_size=5)
>>> model = SpeakerAdaptorModel(asr, MFAHead(num_hidden_states=3, input_size=32,
...     adapter_size=4, attention_channels=4, embedding_size=8))
>>> out = model.recognize_and_embed(torch.randn(2, 8000), torch.tensor([1.0, 0.5]))
>>> out.log_probs.shape, out.embeddings.shape
(torch.Size([2, 13, 5]), torch.Size([2, 1, 8]))
"""

import collections

import torch

AdaptorOutput = collections.namedtuple("AdaptorOutput", ["log_probs", "lengths", "embeddings"])


class SpeakerAdaptorModel(torch.nn.Module):
    """A frozen CTC ASR Conformer and a trainable speaker adaptor on its block outputs.

    Arguments
    ---------
    asr_model : speechbrain_w2vbert_sv.lobes.asr_conformer.ConformerCTC
        The ASR model (front end, encoder, CTC layer). It is frozen here: no
        gradients, always in eval mode.
    head : torch.nn.Module
        The adaptor: ``([L + 1, B, T, D], lengths) -> [B, 1, E]`` (an ``MFAHead``).

    Example
    -------
    >>> from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
    >>> from speechbrain_w2vbert_sv.lobes.asr_conformer import ConformerCTC
    >>> from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
    >>> from speechbrain_w2vbert_sv.lobes.heads import MFAHead
    >>> asr = ConformerCTC(ConformerFbank(n_mels=40), ConformerBackbone(
    ...     n_mels=40, cnn_channels=(8, 8), d_model=32, nhead=4, num_layers=2,
    ...     d_ffn=64, kernel_size=7), vocab_size=5)
    >>> model = SpeakerAdaptorModel(asr, MFAHead(3, 32, 4, 4, 8)).train()
    >>> model.asr_model.training, any(p.requires_grad for p in model.asr_model.parameters())
    (False, False)
    >>> model(torch.randn(2, 8000)).shape
    torch.Size([2, 1, 8])
    """

    def __init__(self, asr_model, head):
        super().__init__()
        self.asr_model = asr_model.freeze_model()
        self.head = head

    # The speaker-model contract: frontend / backbone / head (the Brain splits its
    # optimisers on `backbone`, whose parameters are all frozen here).
    @property
    def frontend(self):
        """The ASR model's front end."""
        return self.asr_model.frontend

    @property
    def backbone(self):
        """The ASR model's (frozen) encoder."""
        return self.asr_model.backbone

    def forward(self, wavs, wav_lens=None):
        """Speaker embeddings (the CTC layer is skipped).

        Arguments
        ---------
        wavs, wav_lens : torch.Tensor
            Waveforms [B, S] and their relative lengths [B] (optional: all full length).

        Returns
        -------
        torch.Tensor
            Embeddings [B, 1, E].
        """
        with torch.no_grad():
            feats, lengths = self.asr_model.frontend(wavs, wav_lens)
            hidden_states, lengths = self.asr_model.backbone(feats, lengths)
        return self.head(hidden_states, lengths)

    def recognize_and_embed(self, wavs, wav_lens=None):
        """CTC log-probabilities and speaker embeddings from one encoder pass.

        Arguments
        ---------
        wavs, wav_lens : torch.Tensor
            Waveforms [B, S] and their relative lengths [B] (optional: all full length).

        Returns
        -------
        AdaptorOutput
            ``log_probs`` [B, T', V] (the frozen ASR model's own), ``lengths`` [B]
            (relative, of the CTC frames) and ``embeddings`` [B, 1, E].
        """
        with torch.no_grad():
            asr = self.asr_model(wavs, wav_lens)
        return AdaptorOutput(asr.log_probs, asr.lengths, self.head(asr.hidden_states, asr.lengths))
