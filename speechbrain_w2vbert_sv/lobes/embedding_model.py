"""The speaker embedding models: (waveform ->) front end -> backbone -> head -> embedding.

``SpeakerEmbeddingModel`` is the whole model, waveform in: what this package trains,
exports and serves. ``FeatureEmbeddingModel`` is its backbone and head alone, features
in: the ``embedding_model`` of SpeechBrain's own speaker recipes, which compute the
features in two steps of their own (``compute_features``, ``mean_var_norm``). The
state dict of either holds ``backbone.*`` and ``head.*`` under the same names.
"""

import torch

from speechbrain_w2vbert_sv.utils import recipe_lengths


class FeatureEmbeddingModel(torch.nn.Module):
    """Backbone + speaker head on features: SpeechBrain's ``embedding_model`` slot.

    SpeechBrain's speaker scripts (``train_speaker_embeddings.py``,
    ``speaker_verification_cosine.py``, ``extract_speaker_embeddings.py``, the AMI
    diarization recipe) call ``embedding_model(feats, lens)`` (training: without
    ``lens``) on the output of ``mean_var_norm``, as with their ECAPA-TDNN.

    Arguments
    ---------
    backbone : torch.nn.Module
        ``(features, lengths) -> (hidden states [L, B, T, D], lengths)``.
    head : torch.nn.Module
        ``(hidden states, lengths) -> embeddings [B, 1, E]``.

    Example
    -------
    >>> from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
    >>> from speechbrain_w2vbert_sv.lobes.heads import MFAHead
    >>> model = FeatureEmbeddingModel(
    ...     backbone=W2VBertBackbone(config={
    ...         "hidden_size": 32, "num_hidden_layers": 2,
    ...         "num_attention_heads": 4, "intermediate_size": 64}),
    ...     head=MFAHead(num_hidden_states=3, input_size=32, adapter_size=8,
    ...                  attention_channels=4, embedding_size=16),
    ... )
    >>> model(torch.randn(2, 49, 160)).shape
    torch.Size([2, 1, 16])
    """

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, feats, lengths=None):
        """Speaker embeddings of a padded batch of features.

        Arguments
        ---------
        feats : torch.Tensor
            Features [B, T, F].
        lengths : torch.Tensor, optional
            Relative lengths [B] (None: all full length; the absolute sample count
            of a batch of one, as SpeechBrain's extraction script passes it, too).

        Returns
        -------
        torch.Tensor
            Embeddings [B, 1, E].
        """
        lengths = recipe_lengths(lengths, feats.shape[0], feats.device)
        hidden_states, lengths = self.backbone(feats, lengths)
        return self.head(hidden_states, lengths)


class SpeakerEmbeddingModel(FeatureEmbeddingModel):
    """Compose a front end, a multi-layer backbone and a speaker head.

    Every backbone speaks one contract, ``(features, lengths) -> ([L, B, T, D], lengths)``,
    and every head ``([L, B, T, D], lengths) -> [B, 1, E]``, so any pair composes.

    Arguments
    ---------
    frontend : torch.nn.Module
        ``(wavs [B, S], wav_lens [B]) -> (features [B, T, F], lengths [B])``.
    backbone : torch.nn.Module
        ``(features, lengths) -> (hidden states [L, B, T, D], lengths)``.
    head : torch.nn.Module
        ``(hidden states, lengths) -> embeddings [B, 1, E]``.

    Example
    -------
    >>> from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank
    >>> from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
    >>> from speechbrain_w2vbert_sv.lobes.heads import MFAHead
    >>> model = SpeakerEmbeddingModel(
    ...     frontend=W2VBertFbank(),
    ...     backbone=W2VBertBackbone(config={
    ...         "hidden_size": 32, "num_hidden_layers": 2,
    ...         "num_attention_heads": 4, "intermediate_size": 64}),
    ...     head=MFAHead(num_hidden_states=3, input_size=32, adapter_size=8,
    ...                  attention_channels=4, embedding_size=16),
    ... )
    >>> model(torch.randn(2, 16000), torch.tensor([1.0, 0.7])).shape
    torch.Size([2, 1, 16])
    """

    def __init__(self, frontend, backbone, head):
        # The front end registered first, as in folders exported before the split:
        # the state dict keeps its order.
        torch.nn.Module.__init__(self)
        self.frontend = frontend
        self.backbone = backbone
        self.head = head

    def forward(self, wavs, wav_lens=None):
        """Speaker embeddings of a padded batch of waveforms.

        Arguments
        ---------
        wavs, wav_lens : torch.Tensor
            Waveforms [B, S] and their relative lengths [B] (optional: all full length).

        Returns
        -------
        torch.Tensor
            Embeddings [B, 1, E].
        """
        feats, lengths = self.frontend(wavs, wav_lens)
        hidden_states, lengths = self.backbone(feats, lengths)
        return self.head(hidden_states, lengths)
