"""Speaker adaptor: a small trainable head on a frozen ASR Conformer.

One encoder pass serves both tasks: the frozen CTC ASR model
(:class:`~speechbrain_w2vbert_sv.backbones.conformer.ConformerCTC`) gives the CTC
log-probabilities from its final output, and the adaptor (an
:class:`~speechbrain_w2vbert_sv.heads.MFAHead`: Layer Adapters on every block output,
concatenation, attentive statistics pooling, embedding) reads the block outputs of the
same pass and gives the speaker embedding. Nothing flows back into the ASR model, so
its transcriptions are exactly those of the ASR model alone.

:class:`SpeakerAdaptorModel` is a speaker embedding model like
:class:`~speechbrain_w2vbert_sv.embedding_model.SpeakerEmbeddingModel`
(``forward(wavs, wav_lens) -> [B, 1, E]``, with ``frontend``, ``backbone`` and
``head``), so the speaker Brain, extraction and scoring use it as they are;
:meth:`SpeakerAdaptorModel.recognize_and_embed` gives both outputs of one pass.
:class:`ASRSpeakerRecognition` is the pretrained interface around it: speaker
embeddings and verification as the other speaker models, plus transcription.

Example
-------
>>> from speechbrain_w2vbert_sv.backbones.conformer import (
...     ConformerBackbone, ConformerCTC, ConformerFbank)
>>> from speechbrain_w2vbert_sv.heads import MFAHead
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

from speechbrain_w2vbert_sv.inference import W2VBertSpeakerRecognition

AdaptorOutput = collections.namedtuple("AdaptorOutput", ["log_probs", "lengths", "embeddings"])


class SpeakerAdaptorModel(torch.nn.Module):
    """A frozen CTC ASR Conformer and a trainable speaker adaptor on its block outputs.

    Arguments
    ---------
    asr_model : speechbrain_w2vbert_sv.backbones.conformer.ConformerCTC
        The ASR model (front end, encoder, CTC layer). It is frozen here: no
        gradients, always in eval mode.
    head : torch.nn.Module
        The adaptor: ``([L + 1, B, T, D], lengths) -> [B, 1, E]`` (an ``MFAHead``).

    Example
    -------
    >>> from speechbrain_w2vbert_sv.backbones.conformer import (
    ...     ConformerBackbone, ConformerCTC, ConformerFbank)
    >>> from speechbrain_w2vbert_sv.heads import MFAHead
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
        wavs : torch.Tensor
            Waveforms [B, S].
        wav_lens : torch.Tensor, optional
            Relative lengths [B].

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
        wavs : torch.Tensor
            Waveforms [B, S].
        wav_lens : torch.Tensor, optional
            Relative lengths [B].

        Returns
        -------
        AdaptorOutput
            ``log_probs`` [B, T', V] (the frozen ASR model's own), ``lengths`` [B]
            (relative, of the CTC frames) and ``embeddings`` [B, 1, E].
        """
        with torch.no_grad():
            asr = self.asr_model(wavs, wav_lens)
        return AdaptorOutput(asr.log_probs, asr.lengths, self.head(asr.hidden_states, asr.lengths))


class ASRSpeakerRecognition(W2VBertSpeakerRecognition):
    """Pretrained interface of a speaker adaptor: verification and transcription.

    Everything of :class:`~speechbrain_w2vbert_sv.inference.W2VBertSpeakerRecognition`
    (``encode_batch``, ``verify_batch``, ``verify_files``, ...) with a
    :class:`SpeakerAdaptorModel` as ``embedding_model``, plus transcription with the
    frozen ASR model; :meth:`transcribe_and_encode_batch` gives both from one pass.
    The hyperparameters also need ``tokens``: the CTC outputs' labels in index
    order (the blank included, as ``label_encoder.txt`` of the ASR recipe lists
    them), and ``blank_index``.

    Example
    -------
    >>> from speechbrain_w2vbert_sv.backbones.conformer import (
    ...     ConformerBackbone, ConformerCTC, ConformerFbank)
    >>> from speechbrain_w2vbert_sv.heads import MFAHead
    >>> asr = ConformerCTC(ConformerFbank(n_mels=40), ConformerBackbone(
    ...     n_mels=40, cnn_channels=(8, 8), d_model=32, nhead=4, num_layers=2,
    ...     d_ffn=64, kernel_size=7), vocab_size=3)
    >>> model = SpeakerAdaptorModel(asr, MFAHead(3, 32, 4, 4, 8))
    >>> interface = ASRSpeakerRecognition(
    ...     modules={"embedding_model": model},
    ...     hparams={"sample_rate": 16000, "threshold": 0.5,
    ...              "tokens": ["<blank>", "yes", "no"], "blank_index": 0})
    >>> words, embeddings = interface.transcribe_and_encode_batch(torch.randn(2, 8000))
    >>> len(words), all(set(w) <= {"yes", "no"} for w in words), embeddings.shape
    (2, True, torch.Size([2, 1, 8]))
    """

    HPARAMS_NEEDED = ["sample_rate", "threshold", "tokens", "blank_index"]

    def _words(self, log_probs, lengths):
        model = self.mods.embedding_model
        hyps = model.asr_model.greedy_decode(log_probs, lengths, self.hparams.blank_index)
        return [[self.hparams.tokens[i] for i in hyp] for hyp in hyps]

    def transcribe_and_encode_batch(self, wavs, wav_lens=None):
        """Greedy CTC transcriptions and speaker embeddings of one encoder pass.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms [B, S].
        wav_lens : torch.Tensor, optional
            Relative lengths [B].

        Returns
        -------
        words : list of list of str
            The transcription of each utterance.
        embeddings : torch.Tensor
            Speaker embeddings [B, 1, E].
        """
        wavs = wavs.to(self.device).float()
        if wav_lens is not None:
            wav_lens = wav_lens.to(self.device)
        with torch.no_grad():
            out = self.mods.embedding_model.recognize_and_embed(wavs, wav_lens)
        return self._words(out.log_probs, out.lengths), out.embeddings

    def transcribe_batch(self, wavs, wav_lens=None):
        """Greedy CTC transcriptions (the ASR model alone: the adaptor is not run).

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms [B, S].
        wav_lens : torch.Tensor, optional
            Relative lengths [B].

        Returns
        -------
        list of list of str
        """
        wavs = wavs.to(self.device).float()
        if wav_lens is not None:
            wav_lens = wav_lens.to(self.device)
        with torch.no_grad():
            out = self.mods.embedding_model.asr_model(wavs, wav_lens)
        return self._words(out.log_probs, out.lengths)
