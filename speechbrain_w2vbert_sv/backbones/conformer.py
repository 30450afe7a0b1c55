"""SpeechBrain's ASR Conformer encoder as a multi-layer backbone, and transfer from ASR.

The encoder is built from SpeechBrain's own classes exactly as its ASR recipes build it
(``ConvolutionFrontEnd`` subsampling + ``TransformerASR`` with
``encoder_module: conformer``), under the attribute names ``CNN`` and ``Transformer``,
so a SpeechBrain ASR checkpoint maps onto it key for key. It returns the input to the
first Conformer block and every block's output, stacked ``[L + 1, B, T, D]``, which
makes an MFA-Conformer speaker model with :class:`~speechbrain_w2vbert_sv.heads.MFAHead`.

:func:`load_asr_checkpoint` initialises it from the files SpeechBrain's Conformer ASR
recipes (``model.ckpt``) and pretrained ASR models (``asr.ckpt``) write, plus their
``normalizer.ckpt``, and reports which keys were loaded, missing, unexpected or ignored
(the attention decoder and its output layer are not part of the encoder).

Example
-------
>>> frontend = ConformerFbank(n_mels=40)
>>> backbone = ConformerBackbone(n_mels=40, cnn_channels=(8, 8), d_model=32, nhead=4,
...                              num_layers=2, d_ffn=64, kernel_size=7)
>>> feats, lengths = frontend(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
>>> hidden, lengths = backbone(feats, lengths)
>>> hidden.shape  # input of block 1 + 2 block outputs, 101 frames / 4
torch.Size([3, 2, 26, 32])
"""

import collections
import dataclasses
import logging
import os
import pathlib

import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from speechbrain.nnet.activations import Swish
from speechbrain.nnet.linear import Linear

from speechbrain_w2vbert_sv.frontend import check_waveform_batch
from speechbrain_w2vbert_sv.utils import lengths_to_mask

logger = logging.getLogger(__name__)

# Order of the `model` ModuleList that SpeechBrain's LibriSpeech Transformer/Conformer
# recipes checkpoint as model.ckpt: [CNN, Transformer, seq_lin, ctc_lin].
LIBRISPEECH_CHECKPOINT_MODULES = ("CNN", "Transformer", "seq_lin", "ctc_lin")
# Parts of a TransformerASR that belong to its attention decoder, not the encoder.
_DECODER_PREFIXES = ("decoder.", "custom_tgt_module.", "positional_encoding_decoder.")
_MODEL_FILES = ("model.ckpt", "asr.ckpt")
_NORMALIZER_FILE = "normalizer.ckpt"


ConformerOutput = collections.namedtuple(
    "ConformerOutput", ["encoder_out", "hidden_states", "lengths"]
)
CTCOutput = collections.namedtuple(
    "CTCOutput", ["log_probs", "encoder_out", "hidden_states", "lengths"]
)


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
                f"ConformerFbank: norm_type must be one of {self.NORM_TYPES}, "
                f"got {norm_type!r}"
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
        """
        name = "normalizer"
        if not isinstance(normalizer, dict):
            name = os.fspath(normalizer)
            normalizer = torch.load(name, map_location="cpu", weights_only=False)
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
        wavs : torch.Tensor
            Waveforms [B, S].
        wav_lens : torch.Tensor, optional
            Relative lengths [B].

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
        """Load a SpeechBrain ASR checkpoint (see :func:`load_asr_checkpoint`)."""
        return load_asr_checkpoint(checkpoint, model=self, **kwargs)

    def forward(self, wavs, wav_lens=None):
        """CTC log-probabilities and every hidden state of one encoder pass.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms [B, S].
        wav_lens : torch.Tensor, optional
            Relative lengths [B].

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
        """Best-path CTC decoding (repeats merged, blanks removed).

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
        mask = lengths_to_mask(lengths, log_probs.shape[1])
        best = log_probs.argmax(dim=-1)
        hyps = []
        for seq, valid in zip(best.tolist(), mask.tolist()):
            tokens, previous = [], None
            for token, keep in zip(seq, valid):
                if not keep:
                    break
                if token != previous and token != blank_index:
                    tokens.append(token)
                previous = token
            hyps.append(tokens)
        return hyps


@dataclasses.dataclass
class TransferReport:
    """What :func:`load_asr_checkpoint` did with each key.

    Attributes
    ----------
    loaded : dict
        Checkpoint key -> the key it was loaded into.
    missing : list
        Keys of the target modules that received nothing (they keep their values).
    unexpected : list
        Checkpoint keys of encoder parts the target does not have (e.g. blocks beyond
        its depth).
    ignored : list
        Checkpoint keys left out by design: the attention decoder, its output layer,
        the CTC layer when no CTC head is given.
    normalizer : bool
        Whether global normalisation statistics were loaded into the front end.
    """

    loaded: dict = dataclasses.field(default_factory=dict)
    missing: list = dataclasses.field(default_factory=list)
    unexpected: list = dataclasses.field(default_factory=list)
    ignored: list = dataclasses.field(default_factory=list)
    normalizer: bool = False

    def __str__(self):
        def head(keys):
            shown = ", ".join(list(keys)[:5])
            return shown + (", ..." if len(keys) > 5 else "")

        return (
            f"{len(self.loaded)} keys loaded; {len(self.missing)} missing [{head(self.missing)}]; "
            f"{len(self.unexpected)} unexpected [{head(self.unexpected)}]; "
            f"{len(self.ignored)} ignored (decoder/output layers); "
            f"global normalisation statistics {'loaded' if self.normalizer else 'not loaded'}"
        )


def _resolve_checkpoint(checkpoint):
    """Model state dict and normaliser file (or None) of a checkpoint argument."""
    if isinstance(checkpoint, dict):
        return checkpoint, None
    path = pathlib.Path(checkpoint)
    if path.is_dir():
        found = [path / name for name in _MODEL_FILES if (path / name).is_file()]
        if not found:
            raise ValueError(
                f"{path}: no {' or '.join(_MODEL_FILES)} in this folder (give a "
                "SpeechBrain checkpoint folder, e.g. save/CKPT+..., or a pretrained "
                "model folder)"
            )
        model_file, normalizer = found[0], path / _NORMALIZER_FILE
    elif path.is_file():
        model_file, normalizer = path, path.with_name(_NORMALIZER_FILE)
    else:
        raise ValueError(f"{path}: ASR checkpoint not found")
    state = torch.load(model_file, map_location="cpu", weights_only=False)
    if not isinstance(state, dict):
        raise ValueError(f"{model_file}: not a state dict ({type(state).__name__})")
    return state, normalizer if normalizer.is_file() else None


def _split_key(key, checkpoint_modules):
    """(module name, rest) of a checkpoint key: ``1.encoder.x`` -> (Transformer, encoder.x)."""
    first, _, rest = key.partition(".")
    if first.isdigit() and checkpoint_modules is not None:
        index = int(first)
        name = checkpoint_modules[index] if index < len(checkpoint_modules) else first
        return name, rest
    return first, rest


def load_asr_checkpoint(
    checkpoint,
    backbone=None,
    frontend=None,
    ctc_head=None,
    model=None,
    checkpoint_modules=LIBRISPEECH_CHECKPOINT_MODULES,
    normalizer=None,
    strict=False,
):
    """Initialise a Conformer backbone (front end, CTC head) from a SpeechBrain ASR checkpoint.

    Key mapping (``checkpoint_modules`` names the entries of the checkpointed
    ``ModuleList`` in order; LibriSpeech recipes: ``[CNN, Transformer, seq_lin,
    ctc_lin]``; keys that already start with a name, as in a ``ModuleDict``, are
    read as they are):

    * ``CNN.*`` -> ``backbone.CNN.*``;
    * ``Transformer.{custom_src_module, encoder, positional_encoding}.*`` ->
      ``backbone.Transformer.*`` (input projection, Conformer blocks, final norm,
      relative positions);
    * ``Transformer.{decoder, custom_tgt_module, positional_encoding_decoder}.*``:
      ignored (attention decoder);
    * ``ctc_lin.*`` -> ``ctc_head.*`` (ignored without a head); anything else
      (``seq_lin``, ...): ignored;
    * ``normalizer.ckpt`` (global statistics) -> ``frontend``
      (:meth:`ConformerFbank.load_normalizer`).

    Arguments
    ---------
    checkpoint : str, os.PathLike or dict
        ``model.ckpt``/``asr.ckpt`` file, a folder holding one (a ``CKPT+...`` folder
        of a recipe or a pretrained model folder; its ``normalizer.ckpt`` is used
        too), or a state dict.
    backbone : ConformerBackbone, optional
        Receives the encoder weights.
    frontend : ConformerFbank, optional
        Receives the normalisation statistics.
    ctc_head : torch.nn.Module, optional
        Receives the CTC output layer (SpeechBrain ``Linear``).
    model : torch.nn.Module, optional
        Instead of the three above: a model whose ``backbone``, ``frontend`` and
        ``ctc_lin`` attributes receive them (``ConformerCTC``,
        ``MultiTaskSpeakerModel``); handy in HyperPyYAML (``!apply:``).
    checkpoint_modules : sequence of str, optional
        Names of the ModuleList entries of the checkpoint, in order.
    normalizer : str, os.PathLike or dict, optional
        Normaliser checkpoint, if not next to the model file.
    strict : bool
        Raise a ValueError when keys are missing or unexpected.

    Returns
    -------
    TransferReport
        Loaded, missing, unexpected and ignored keys (also logged).

    Raises
    ------
    ValueError
        A checkpoint tensor whose shape differs from its target (the message names the
        key and both shapes), an unreadable checkpoint, or (``strict``) missing or
        unexpected keys.

    Example
    -------
    >>> backbone = ConformerBackbone(n_mels=40, cnn_channels=(8, 8), d_model=32,
    ...                              nhead=4, num_layers=2, d_ffn=64, kernel_size=7)
    >>> ckpt = {"0." + k: v for k, v in backbone.CNN.state_dict().items()}
    >>> ckpt.update({"1." + k: v for k, v in backbone.Transformer.state_dict().items()})
    >>> report = load_asr_checkpoint(ckpt, backbone)
    >>> len(report.loaded) == len(ckpt), report.missing, report.unexpected
    (True, [], [])
    """
    if model is not None:
        backbone = model.backbone
        frontend = getattr(model, "frontend", frontend)
        ctc_head = getattr(model, "ctc_lin", ctc_head)
    if backbone is None:
        raise ValueError("load_asr_checkpoint needs a `backbone` (or a `model` with one)")
    state, normalizer_file = _resolve_checkpoint(checkpoint)
    targets = {"CNN": backbone.CNN, "Transformer": backbone.Transformer}
    prefixes = {"CNN": "backbone.CNN.", "Transformer": "backbone.Transformer."}
    if ctc_head is not None:
        targets["ctc_lin"], prefixes["ctc_lin"] = ctc_head, "ctc_head."
    new_states = {name: module.state_dict() for name, module in targets.items()}
    report = TransferReport()
    filled = {name: set() for name in targets}
    for key, value in state.items():
        name, rest = _split_key(key, checkpoint_modules)
        if name == "Transformer" and rest.startswith(_DECODER_PREFIXES):
            report.ignored.append(key)
            continue
        if name not in targets:
            report.ignored.append(key)
            continue
        target = new_states[name]
        if rest not in target:
            report.unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(target[rest].shape):
            raise ValueError(
                f"ASR checkpoint key {key!r} has shape {tuple(value.shape)} but its target "
                f"{prefixes[name]}{rest} has shape {tuple(target[rest].shape)}: build the "
                "backbone with the ASR model's hyperparameters (n_mels, cnn_channels, "
                "d_model, d_ffn, kernel_size, ...)"
            )
        target[rest] = value
        filled[name].add(rest)
        report.loaded[key] = prefixes[name] + rest
    for name, module in targets.items():
        module.load_state_dict(new_states[name])
        report.missing.extend(
            prefixes[name] + k for k in new_states[name] if k not in filled[name]
        )

    normalizer = normalizer if normalizer is not None else normalizer_file
    if frontend is not None and normalizer is not None:
        report.normalizer = frontend.load_normalizer(normalizer)
    logger.info("ASR checkpoint transfer: %s", report)
    if report.missing or report.unexpected:
        logger.warning(
            "ASR checkpoint transfer: missing %s, unexpected %s",
            report.missing, report.unexpected,
        )
        if strict:
            raise ValueError(f"ASR checkpoint does not fit the model (strict): {report}")
    return report
