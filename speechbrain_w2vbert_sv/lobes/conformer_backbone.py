"""SpeechBrain's ASR Conformer encoder as a multi-layer backbone.

The encoder is built from SpeechBrain's own classes exactly as its ASR recipes build it
(``ConvolutionFrontEnd`` subsampling + ``TransformerASR`` with
``encoder_module: conformer``), under the attribute names ``CNN`` and ``Transformer``,
so a SpeechBrain ASR checkpoint maps onto it key for key (see
:mod:`speechbrain_w2vbert_sv.lobes.asr_conformer`). It returns the input to the
first Conformer block and every block's output, stacked ``[L + 1, B, T, D]``, which
makes an MFA-Conformer speaker model with :class:`~speechbrain_w2vbert_sv.lobes.heads.MFAHead`.

Example
-------
>>> from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
>>> frontend = ConformerFbank(n_mels=40)
>>> backbone = ConformerBackbone(n_mels=40, cnn_channels=(8, 8), d_model=32, nhead=4,
...                              num_layers=2, d_ffn=64, kernel_size=7)
>>> feats, lengths = frontend(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
>>> hidden, lengths = backbone(feats, lengths)
>>> hidden.shape  # input of block 1 + 2 block outputs, 101 frames / 4
torch.Size([3, 2, 26, 32])
"""

import collections

import torch
from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from speechbrain.nnet.activations import Swish

ConformerOutput = collections.namedtuple(
    "ConformerOutput", ["encoder_out", "hidden_states", "lengths"]
)


class ConformerBackbone(torch.nn.Module):
    """SpeechBrain's ASR Conformer encoder returning every block's output.

    ``CNN`` is a ``ConvolutionFrontEnd`` (one conv layer per block, no residuals, as in
    the LibriSpeech Conformer recipes) and ``Transformer`` an encoder-only
    ``TransformerASR`` with ``encoder_module="conformer"``; the arguments mirror those
    recipes' hparams, so an ASR checkpoint loads when they match (see
    :func:`load_asr_checkpoint`).

    Arguments
    ---------
    n_mels : int
        Width of the input features (the CNN's layer norms depend on it).
    cnn_channels : sequence of int
        Output channels of each conv block.
    cnn_kernel_sizes : sequence of int
        Kernel size of each conv block (default 3 for all).
    cnn_strides : sequence of int
        Stride of each conv block (default 2 for all: 4x subsampling for two).
    d_model : int
        Width of the Conformer.
    nhead : int
        Attention heads.
    num_layers : int
        Conformer blocks.
    d_ffn : int
        Inner width of the feed-forward modules.
    kernel_size : int
        Depthwise convolution kernel of the Conformer blocks.
    dropout : float
        Dropout of the Conformer.
    attention_type : str
        ``RelPosMHAXL`` (SpeechBrain's Conformer recipes) or ``regularMHA``.
    activation : type
        Activation class of the Conformer blocks (``Swish`` in SpeechBrain's).
    freeze : bool
        Freeze the encoder: no gradients, always in eval mode (no dropout).

    Example
    -------
    >>> backbone = ConformerBackbone(n_mels=40, cnn_channels=(8, 8), d_model=32,
    ...                              nhead=4, num_layers=2, d_ffn=64, kernel_size=7)
    >>> backbone.num_hidden_states, backbone.hidden_size
    (3, 32)
    >>> out = backbone.encode(torch.randn(2, 20, 40), torch.tensor([1.0, 0.5]))
    >>> out.encoder_out.shape, out.hidden_states.shape
    (torch.Size([2, 5, 32]), torch.Size([3, 2, 5, 32]))
    """

    def __init__(
        self,
        n_mels=80,
        cnn_channels=(64, 32),
        cnn_kernel_sizes=None,
        cnn_strides=None,
        d_model=144,
        nhead=4,
        num_layers=12,
        d_ffn=1024,
        kernel_size=31,
        dropout=0.1,
        attention_type="RelPosMHAXL",
        activation=Swish,
        freeze=False,
    ):
        super().__init__()
        num_blocks = len(cnn_channels)
        cnn_kernel_sizes = list(cnn_kernel_sizes or [3] * num_blocks)
        cnn_strides = list(cnn_strides or [2] * num_blocks)
        if not len(cnn_kernel_sizes) == len(cnn_strides) == num_blocks:
            raise ValueError(
                "ConformerBackbone: cnn_channels, cnn_kernel_sizes and cnn_strides need "
                f"one entry per conv block, got {num_blocks}, {len(cnn_kernel_sizes)} "
                f"and {len(cnn_strides)}"
            )
        self.CNN = ConvolutionFrontEnd(
            input_shape=(8, 10, n_mels),
            num_blocks=num_blocks,
            num_layers_per_block=1,
            out_channels=list(cnn_channels),
            kernel_sizes=cnn_kernel_sizes,
            strides=cnn_strides,
            residuals=[False] * num_blocks,
        )
        with torch.no_grad():
            _, _, freq, channels = self.CNN(torch.zeros(1, 8, n_mels)).shape
        self.Transformer = TransformerASR(
            tgt_vocab=1,
            input_size=freq * channels,
            d_model=d_model,
            nhead=nhead,
            num_encoder_layers=num_layers,
            num_decoder_layers=0,
            d_ffn=d_ffn,
            dropout=dropout,
            kernel_size=kernel_size,
            encoder_module="conformer",
            conformer_activation=activation,
            attention_type=attention_type,
            normalize_before=True,
            causal=False,
            output_hidden_states=True,
        )
        # Only the attention decoder uses it (2500 x d_model of buffer otherwise).
        if hasattr(self.Transformer, "positional_encoding_decoder"):
            del self.Transformer.positional_encoding_decoder
        self.freeze = freeze
        if freeze:
            self.requires_grad_(False)
            self.eval()

    @property
    def num_hidden_states(self):
        """Number of hidden states returned: block input + every block."""
        return len(self.Transformer.encoder.layers) + 1

    @property
    def hidden_size(self):
        """Width of every hidden state."""
        return self.Transformer.encoder.norm.norm.normalized_shape[0]

    def train(self, mode=True):
        """Set the training mode; a frozen encoder stays in eval mode (no dropout)."""
        return super().train(mode and not self.freeze)

    def encode(self, feats, lengths=None):
        """Run the encoder: final (normalised) output and every hidden state.

        Arguments
        ---------
        feats : torch.Tensor
            Features [B, T, n_mels].
        lengths : torch.Tensor, optional
            Relative lengths [B].

        Returns
        -------
        ConformerOutput
            ``encoder_out`` [B, T', D] (after the encoder's final LayerNorm: what an
            ASR output layer reads), ``hidden_states`` [L + 1, B, T', D] and
            ``lengths`` [B] (relative: unchanged by subsampling).
        """
        if lengths is None:
            lengths = torch.ones(feats.shape[0], device=feats.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            encoder_out, hidden = self.Transformer.encode(self.CNN(feats), lengths)
        return ConformerOutput(encoder_out, torch.stack(hidden), lengths)

    def forward(self, feats, lengths=None):
        """Every hidden state, stacked (the backbone contract of the project).

        Arguments
        ---------
        feats : torch.Tensor
            Features [B, T, n_mels].
        lengths : torch.Tensor, optional
            Relative lengths [B].

        Returns
        -------
        hidden_states : torch.Tensor
            [L + 1, B, T', D]: the input to the first block, then each block's output.
        lengths : torch.Tensor
            Relative lengths [B].
        """
        out = self.encode(feats, lengths)
        return out.hidden_states, out.lengths
