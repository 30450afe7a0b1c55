"""Speaker heads over a backbone's stacked hidden states [L, B, T, D].

The Layer-Adapter multi-layer feature aggregation (MFA) head of the w2v-BERT 2.0 speaker
system, its attentive statistics pooling, and the learned layer-weighted sum that lets a
stock SpeechBrain model (e.g. ECAPA-TDNN) sit on a backbone.
"""

import torch

from speechbrain_w2vbert_sv.utils import lengths_to_mask


class LayerAdapter(torch.nn.Sequential):
    """Linear -> LayerNorm -> ReLU -> Linear, applied frame by frame to one hidden state.

    Arguments
    ---------
    input_size : int
        Width of the hidden state.
    adapter_size : int
        Width of the adapter output.

    Example
    -------
    >>> LayerAdapter(32, 8)(torch.randn(2, 5, 32)).shape
    torch.Size([2, 5, 8])
    """

    def __init__(self, input_size=1024, adapter_size=128):
        super().__init__(
            torch.nn.Linear(input_size, adapter_size),
            torch.nn.LayerNorm(adapter_size),
            torch.nn.ReLU(),
            torch.nn.Linear(adapter_size, adapter_size),
        )


class AttentiveStatisticsPooling(torch.nn.Module):
    """Channel-wise attentive statistics pooling that ignores padded frames.

    Attention weights per channel and frame: Conv1d -> ReLU -> BatchNorm -> Conv1d, softmax
    over the valid frames (no global context); returns the weighted mean and standard
    deviation concatenated.

    Arguments
    ---------
    channels : int
        Input width C.
    attention_channels : int
        Width of the attention bottleneck.
    eps : float
        Floor of the variance before the square root.

    Example
    -------
    >>> pool = AttentiveStatisticsPooling(channels=16, attention_channels=4)
    >>> pool(torch.randn(2, 7, 16), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 32])
    """

    def __init__(self, channels=3200, attention_channels=128, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.attention = torch.nn.Sequential(
            torch.nn.Conv1d(channels, attention_channels, kernel_size=1),
            torch.nn.ReLU(),
            torch.nn.BatchNorm1d(attention_channels),
            torch.nn.Conv1d(attention_channels, channels, kernel_size=1),
        )

    def forward(self, x, lengths=None):
        """Pool [B, T, C] frames into [B, 2C] statistics.

        Arguments
        ---------
        x : torch.Tensor
            Frames [B, T, C].
        lengths : torch.Tensor, optional
            Relative lengths [B].

        Returns
        -------
        torch.Tensor
            Weighted mean and standard deviation, [B, 2C].
        """
        if lengths is None:
            lengths = torch.ones(x.shape[0], device=x.device)
        mask = lengths_to_mask(lengths, x.shape[1])[:, None, :]  # [B, 1, T]
        frames = x.transpose(1, 2)  # [B, C, T]
        scores = self.attention(frames).float()
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        frames = frames.float().masked_fill(~mask, 0.0)
        mean = (weights * frames).sum(dim=-1)
        var = (weights * frames.pow(2)).sum(dim=-1) - mean.pow(2)
        std = var.clamp(min=self.eps).sqrt()
        return torch.cat([mean, std], dim=-1).to(x.dtype)


class MFAHead(torch.nn.Module):
    """Layer Adapters -> multi-layer concatenation -> attentive pooling -> embedding.

    Defaults are the w2v-BERT 2.0 speaker system's (about 6.16 M parameters for 25 hidden
    states of width 1024).

    Arguments
    ---------
    num_hidden_states : int
        Number of stacked hidden states L the backbone returns.
    input_size : int
        Width D of each hidden state.
    adapter_size : int
        Output width of each Layer Adapter.
    attention_channels : int
        Bottleneck width of the pooling attention.
    embedding_size : int
        Size of the speaker embedding.
    pooling_eps : float
        Floor of the pooled variance (1e-6 in this package's training; the released
        checkpoints of the paper's code and WeSpeaker were trained with 1e-5, which
        their imported folders store).

    Example
    -------
    >>> head = MFAHead(num_hidden_states=3, input_size=32, adapter_size=8,
    ...                attention_channels=4, embedding_size=16)
    >>> head(torch.randn(3, 2, 7, 32), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 1, 16])
    """

    def __init__(
        self,
        num_hidden_states=25,
        input_size=1024,
        adapter_size=128,
        attention_channels=128,
        embedding_size=256,
        pooling_eps=1e-6,
    ):
        super().__init__()
        self.adapters = torch.nn.ModuleList(
            LayerAdapter(input_size, adapter_size) for _ in range(num_hidden_states)
        )
        mfa_size = num_hidden_states * adapter_size
        self.pooling = AttentiveStatisticsPooling(mfa_size, attention_channels, pooling_eps)
        self.embedding = torch.nn.Linear(2 * mfa_size, embedding_size)

    def forward(self, hidden_states, lengths=None):
        """Speaker embedding from stacked hidden states.

        Arguments
        ---------
        hidden_states : torch.Tensor
            [L, B, T, D] hidden states of the backbone.
        lengths : torch.Tensor, optional
            Relative lengths [B].

        Returns
        -------
        torch.Tensor
            Embeddings [B, 1, E].
        """
        if hidden_states.shape[0] != len(self.adapters):
            raise ValueError(
                f"MFAHead was built for {len(self.adapters)} hidden states but received "
                f"{hidden_states.shape[0]}: set num_hidden_states to the backbone's."
            )
        mfa = torch.cat([adapter(h) for adapter, h in zip(self.adapters, hidden_states)], dim=-1)
        return self.embedding(self.pooling(mfa, lengths)).unsqueeze(1)


class WeightedLayerSum(torch.nn.Module):
    """Learned softmax-weighted sum of stacked hidden states: [L, B, T, D] -> [B, T, D].

    Puts any frame-level SpeechBrain model (ECAPA-TDNN, x-vector) on a multi-layer
    backbone.

    Arguments
    ---------
    num_hidden_states : int
        Number of stacked hidden states L.
    layer_norm : bool
        Normalise each hidden state (no affine) before weighting, so layers of different
        scales weigh by the learned weights only.

    Example
    -------
    >>> WeightedLayerSum(3)(torch.randn(3, 2, 7, 32)).shape
    torch.Size([2, 7, 32])
    """

    def __init__(self, num_hidden_states=25, layer_norm=True):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.zeros(num_hidden_states))
        self.layer_norm = layer_norm

    def forward(self, hidden_states):
        """Weighted sum over the first axis.

        Arguments
        ---------
        hidden_states : torch.Tensor
            [L, B, T, D].

        Returns
        -------
        torch.Tensor
            [B, T, D].
        """
        if self.layer_norm:
            hidden_states = torch.nn.functional.layer_norm(hidden_states, hidden_states.shape[-1:])
        weights = torch.softmax(self.weights, dim=0).to(hidden_states.dtype)
        return torch.einsum("l,lbtd->btd", weights, hidden_states)


class LayerSumHead(torch.nn.Module):
    """A frame-level speaker model (e.g. SpeechBrain's ECAPA_TDNN) on a weighted layer sum.

    Arguments
    ---------
    num_hidden_states : int
        Number of stacked hidden states L the backbone returns.
    encoder : torch.nn.Module
        Called as ``encoder(x [B, T, D], lengths) -> [B, 1, E]``, as SpeechBrain's
        speaker lobes are.

    Example
    -------
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> ecapa = ECAPA_TDNN(32, channels=[16, 16, 16, 16, 48], lin_neurons=8)
    >>> head = LayerSumHead(3, ecapa)
    >>> head(torch.randn(3, 2, 7, 32), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 1, 8])
    """

    def __init__(self, num_hidden_states, encoder):
        super().__init__()
        self.layer_sum = WeightedLayerSum(num_hidden_states)
        self.encoder = encoder

    def forward(self, hidden_states, lengths=None):
        """Speaker embedding [B, 1, E] from [L, B, T, D] hidden states."""
        return self.encoder(self.layer_sum(hidden_states), lengths)
