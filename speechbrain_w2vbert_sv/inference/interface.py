"""The pretrained speaker-verification interfaces (SpeechBrain's ``from_hparams``).

``W2VBertSpeakerRecognition`` loads an exported folder (``hyperparams.yaml`` +
``embedding_model.ckpt``, see :mod:`speechbrain_w2vbert_sv.inference.export`), or a
training run directly (``from_run``), and embeds and verifies waveforms and files.
``ASRSpeakerRecognition`` (a speaker adaptor's export) also transcribes. SpeechBrain's
stock ``EncoderClassifier`` and ``SpeakerRecognition`` load the folder too and give the
same embeddings: their ``encode_batch`` chain (compute_features -> mean_var_norm ->
embedding_model) is served by two ``PassThrough`` modules and the waveform-to-embedding
model (``classify_batch`` is not available: no classifier is exported). The other way
round, ``SpeechBrainSpeakerRecognition`` serves SpeechBrain's own pretrained speaker
folders (``speechbrain/spkrec-ecapa-voxceleb``'s layout) through this package's tools;
``load_model`` picks the interface of a folder.

Example
-------
>>> from hyperpyyaml import load_hyperpyyaml
>>> from speechbrain_w2vbert_sv.inference.model_yaml import inference_hparams_text
>>> small = {"w2vbert_source": None, "w2vbert_config": {"hidden_size": 32, "num_hidden_layers": 2,
...     "num_attention_heads": 4, "intermediate_size": 64}, "num_hidden_states": 3,
...     "hidden_size": 32, "adapter_size": 8, "attention_channels": 4, "embedding_size": 16}
>>> hparams = load_hyperpyyaml(inference_hparams_text(small, threshold=0.5))
>>> model = W2VBertSpeakerRecognition(modules=hparams["modules"], hparams=hparams)
>>> score, same = model.verify_batch(torch.randn(2, 16000), torch.randn(2, 16000))
>>> score.shape, same.dtype
(torch.Size([2, 1]), torch.bool)
"""

import importlib
import os
import pathlib

import ruamel.yaml
import torch
from ruamel.yaml.error import YAMLError
from speechbrain.inference.speaker import SpeakerRecognition
from speechbrain.utils.data_utils import split_path
from speechbrain.utils.fetching import fetch
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.audio import load_audio
from speechbrain_w2vbert_sv.data.ctc_tokens import CTCTokens
from speechbrain_w2vbert_sv.inference.extraction import autocast_context, embed_files
from speechbrain_w2vbert_sv.inference.model_yaml import (
    HPARAMS_FILE,
    TEMPLATE,
    WEIGHTS_FILE,
    yaml_error,
)
from speechbrain_w2vbert_sv.inference.training_runs import load_run
from speechbrain_w2vbert_sv.lobes.attention import (
    enable_memory_efficient_attention,
    memory_efficient_attention_on,
)
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
from speechbrain_w2vbert_sv.utils import check_device, load_checkpoint_file

logger = get_logger(__name__)


class PassThrough(torch.nn.Module):
    """Returns its first input unchanged (ignores the others, e.g. lengths).

    Stands in for the feature and normalisation steps of SpeechBrain's stock
    ``EncoderClassifier.encode_batch`` chain: the embedding model takes waveforms.

    Example
    -------
    >>> PassThrough()(torch.ones(2), torch.tensor([1.0, 0.5])).tolist()
    [1.0, 1.0]
    """

    def forward(self, x, *args, **kwargs):
        """Returns ``x``."""
        return x


class W2VBertSpeakerRecognition(SpeakerRecognition):
    """Speaker embeddings and cosine verification with a waveform-to-embedding model.

    Loads an exported folder with ``from_hparams(source=<folder>)`` (offline) or a
    training run with ``from_run``. ``encode_batch`` calls the embedding model
    directly (waveforms and relative lengths in); files are read with
    :func:`speechbrain_w2vbert_sv.data.audio.load_audio` (any rate or channel count:
    resampled to ``sample_rate`` and downmixed). Decisions compare the cosine score
    with ``threshold`` (from the hyperparameters unless given). The w2v-BERT
    attention runs on the memory-efficient path
    (:mod:`speechbrain_w2vbert_sv.lobes.attention`) unless the hyperparameters set
    ``memory_efficient_attention: False``.

    Arguments
    ---------
    See ``speechbrain.inference.interfaces.Pretrained``; the hyperparameters need
    ``sample_rate`` and ``threshold``, the modules ``embedding_model``.
    """

    MODULES_NEEDED = ["embedding_model"]
    HPARAMS_NEEDED = ["sample_rate", "threshold"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.use_memory_efficient_attention(
            getattr(self.hparams, "memory_efficient_attention", True)
        )

    def use_memory_efficient_attention(self, enabled=True):
        """Switches the w2v-BERT attention between the memory-efficient exact form
        (the default of exported models) and HF's own forward.

        The choice becomes the ``memory_efficient_attention`` setting of every
        ``W2VBertBackbone`` of the model, so a later ``eval()`` or ``train()`` keeps it.

        Arguments
        ---------
        enabled : bool or str
            True: relative-key attention in query chunks (long utterances fit in
            memory, the same numbers up to float rounding); False: HF's forward;
            ``"inference"``: the former in eval mode only (the backbone's default).
        """
        # Any w2v-BERT encoder outside a backbone switches now; backbones then apply
        # (and keep) the setting themselves.
        on = memory_efficient_attention_on(enabled, self.mods.training)
        enable_memory_efficient_attention(self.mods, enabled=on)
        for module in self.mods.modules():
            if isinstance(module, W2VBertBackbone):
                module.memory_efficient_attention = enabled

    def load_audio(self, path, savedir=None):
        """Reads an audio file as a mono waveform at the model's sample rate.

        Arguments
        ---------
        path : str or os.PathLike
            A local file, or a URL (fetched into ``savedir``).
        savedir : str, optional
            Where a URL is downloaded.

        Returns
        -------
        torch.Tensor
            ``[samples]`` float32 on the model's device.
        """
        path = os.fspath(path)
        if "://" in path:
            source, name = split_path(path)
            path = fetch(name, source=source, savedir=savedir)
        wav = load_audio(path, self.hparams.sample_rate)
        return wav.to(self.device)

    def encode_batch(self, wavs, wav_lens=None, normalize=False):
        """Speaker embeddings of a padded batch of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` (or ``[samples]``) at ``sample_rate``.
        wav_lens : torch.Tensor, optional
            ``[batch]`` relative lengths in (0, 1]; None: all full length.
        normalize : bool
            Not supported (kept for the signature of SpeechBrain's class): the
            model carries no embedding statistics; must be False.

        Returns
        -------
        torch.Tensor
            ``[batch, 1, embedding_size]`` float32.
        """
        if normalize:
            raise ValueError(
                "normalize=True is not supported: the model has no embedding "
                "statistics (subtract a mean embedding with "
                "speechbrain_w2vbert_sv.scoring.cosine.mean_embedding instead)"
            )
        wavs, wav_lens = self._on_device(wavs, wav_lens)
        with autocast_context(self.device, self.precision):
            embeddings = self.mods.embedding_model(wavs, wav_lens)
        return embeddings.float()

    def _on_device(self, wavs, wav_lens):
        """A batch ``[B, S]`` (``[S]``: a batch of one) and its lengths on the device."""
        wavs = torch.as_tensor(wavs)
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wav_lens is not None:
            wav_lens = torch.as_tensor(wav_lens).to(self.device)
        return wavs.to(self.device).float(), wav_lens

    def verify_batch(self, wavs1, wavs2, wav1_lens=None, wav2_lens=None, threshold=None):
        """Cosine scores and decisions of pairs of waveform batches.

        Arguments
        ---------
        wavs1, wavs2 : torch.Tensor
            ``[batch, samples]`` waveforms of the two sides of each pair.
        wav1_lens, wav2_lens : torch.Tensor, optional
            ``[batch]`` relative lengths.
        threshold : float, optional
            Decision threshold on the cosine score (default: ``hparams.threshold``).

        Returns
        -------
        score : torch.Tensor
            ``[batch, 1]`` cosine scores.
        decision : torch.Tensor
            ``[batch, 1]`` bool, True for "same speaker" (score above threshold).
        """
        if threshold is None:
            threshold = self.hparams.threshold
        emb1 = self.encode_batch(wavs1, wav1_lens)
        emb2 = self.encode_batch(wavs2, wav2_lens)
        score = self.similarity(emb1, emb2)
        return score, score > threshold

    def verify_files(self, path_x, path_y, threshold=None):
        """Cosine score and decision of two audio files.

        Arguments
        ---------
        path_x, path_y : str or os.PathLike
            Audio files (any rate or channel count).
        threshold : float, optional
            Decision threshold (default: ``hparams.threshold``).

        Returns
        -------
        score : torch.Tensor
            ``[1]`` cosine score.
        decision : torch.Tensor
            ``[1]`` bool, True for "same speaker".
        """
        score, decision = self.verify_batch(
            self.load_audio(path_x)[None], self.load_audio(path_y)[None], threshold=threshold
        )
        return score[0], decision[0]

    def encode_files(self, paths, **kwargs):
        """Embeds a list of files in length-sorted batches, each distinct file once.

        Arguments
        ---------
        paths : sequence of str or os.PathLike
            Audio files.
        **kwargs
            Options of :func:`speechbrain_w2vbert_sv.inference.extraction.embed_files`
            (``batch_seconds``, ``precision``, ``progress``, ...).

        Returns
        -------
        torch.Tensor
            ``[len(paths), embedding_size]`` float32 on the CPU.
        """
        kwargs.setdefault("precision", self.precision)
        kwargs.setdefault("device", self.device)
        return embed_files(
            self.mods.embedding_model, paths, sample_rate=self.hparams.sample_rate, **kwargs
        )

    def diarize(self, path, speech=None, **options):
        """Who spoke when in an audio file (see
        :class:`speechbrain_w2vbert_sv.applications.diarization.Diarizer`).

        Arguments
        ---------
        path : str or os.PathLike
            Audio file (any rate or channel count).
        speech : list of (float, float), optional
            Speech regions in seconds (default: Silero VAD's).
        **options
            Options of ``Diarizer`` (``mode``, ``clustering``, ``num_speakers``,
            ``vad``, ...).

        Returns
        -------
        list of (float, float, str)
            ``(start, end, speaker)`` segments in seconds; empty without speech.
        """
        # Imported here: applications/ builds on inference/, not the other way round.
        from speechbrain_w2vbert_sv.applications.diarization import Diarizer

        return Diarizer(self, **options).diarize_file(path, speech)

    def enroll(self, store, speakers=(), paths=(), remove=(), **options):
        """Adds files of speakers to a speaker store (created if absent) and/or removes
        speakers (see :func:`speechbrain_w2vbert_sv.applications.identification.enroll`).

        Arguments
        ---------
        store : str or os.PathLike
            The store folder.
        speakers : sequence of str
            The speaker of each file.
        paths : sequence of str or os.PathLike
            Audio files.
        remove : sequence of str
            Enrolled speakers to remove (before the files are added).
        **options
            ``model_name``, ``dtype`` and the options of ``encode_files``.

        Returns
        -------
        speechbrain_w2vbert_sv.applications.identification.SpeakerStore
            The written store.
        """
        from speechbrain_w2vbert_sv.applications.identification import enroll

        return enroll(self, store, list(speakers), [os.fspath(p) for p in paths], remove, **options)

    def identify(self, store, paths, top_k=1, threshold=None, **options):
        """The enrolled speaker of each file, or ``unknown`` below the threshold (see
        :func:`speechbrain_w2vbert_sv.applications.identification.identify`).

        Arguments
        ---------
        store : str or os.PathLike
            A store enrolled with this model (any of its forms).
        paths : sequence of str or os.PathLike
            Audio files.
        top_k : int
            Candidates listed per file.
        threshold : float, optional
            Lowest score that names a speaker (default: ``hparams.threshold``).
        **options
            ``model_name`` and the options of ``encode_files``.

        Returns
        -------
        list of speechbrain_w2vbert_sv.applications.identification.Identification
            ``speaker`` (or ``unknown``), ``score`` and ``candidates`` per file.
        """
        from speechbrain_w2vbert_sv.applications.identification import identify

        return identify(self, store, [os.fspath(p) for p in paths], top_k, threshold, **options)

    @classmethod
    def from_run(cls, run, hparams_file=None, overrides=None, threshold=None, **kwargs):
        """Builds the interface from a training run (LoRA merged), writing nothing.

        Arguments
        ---------
        run : str or os.PathLike
            Training output folder (its latest checkpoint is used) or a checkpoint
            folder (``CKPT+...``).
        hparams_file : str or os.PathLike, optional
            Training hyperparameters (default: the run's ``hyperparams.yaml``).
        overrides : dict, optional
            Overrides of the training hyperparameters.
        threshold : float, optional
            Decision threshold (default: the template's).
        **kwargs
            Arguments of the class (``run_opts``, ...).

        Returns
        -------
        W2VBertSpeakerRecognition
        """
        hparams, _ = load_run(run, hparams_file, overrides, threshold)
        return cls(modules=hparams["modules"], hparams=hparams, **kwargs)

    @classmethod
    def from_onnx(cls, path, threshold=None, frontend=None, num_threads=None, **kwargs):
        """Builds the interface around an ONNX file written by ``w2vbert-sv onnx``.

        ``encode_batch``, ``verify_batch``, ``verify_files`` and ``encode_files``
        work as with the torch model; the graph runs in onnxruntime on the CPU.

        Arguments
        ---------
        path : str or os.PathLike
            The ONNX file (waveform in, or features in with ``frontend``).
        threshold : float, optional
            Decision threshold (default: the one recorded at export, else the
            template's).
        frontend : torch.nn.Module, optional
            Front end of a features-in graph (default: ``W2VBertFbank()``).
        num_threads : int, optional
            onnxruntime intra-op threads.
        **kwargs
            Arguments of the class (``run_opts``...).

        Returns
        -------
        W2VBertSpeakerRecognition
        """
        from speechbrain_w2vbert_sv.inference.onnx import ONNXEmbeddingModel, read_onnx_info
        from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank

        info = read_onnx_info(path)
        if info["input"] == "features" and frontend is None:
            frontend = W2VBertFbank()
        model = ONNXEmbeddingModel(path, frontend=frontend, num_threads=num_threads)
        if threshold is None:
            template = ruamel.yaml.YAML().load(TEMPLATE.read_text(encoding="utf-8"))
            threshold = float(info.get("threshold", template["threshold"]))
        hparams = {
            "sample_rate": int(info.get("sample_rate", 16000)),
            "threshold": float(threshold),
            "memory_efficient_attention": False,
        }
        kwargs.setdefault("run_opts", {"device": "cpu"})
        return cls(modules={"embedding_model": model}, hparams=hparams, **kwargs)


class SpeechBrainEncoderChain(torch.nn.Module):
    """The waveform-to-embedding model of a SpeechBrain speaker folder: what
    SpeechBrain's ``EncoderClassifier.encode_batch`` computes, ``compute_features(wavs)``
    -> ``mean_var_norm(feats, wav_lens)`` -> ``embedding_model(feats, wav_lens)``
    (it applies ``mean_var_norm_emb`` only with ``normalize=True``).

    Arguments
    ---------
    compute_features : torch.nn.Module
        Waveforms [B, S] -> features [B, T, F] (e.g. ``speechbrain.lobes.features.Fbank``).
    mean_var_norm : torch.nn.Module
        ``(features, relative lengths) -> features`` (e.g. ``InputNormalization``).
    embedding_model : torch.nn.Module
        ``(features, relative lengths) -> embeddings [B, 1, E]`` (e.g. ``ECAPA_TDNN``).

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> from speechbrain.processing.features import InputNormalization
    >>> chain = SpeechBrainEncoderChain(
    ...     Fbank(n_mels=40),
    ...     InputNormalization(norm_type="sentence", std_norm=False),
    ...     ECAPA_TDNN(40, channels=[16, 16, 16, 16, 48], lin_neurons=8),
    ... ).eval()
    >>> chain(torch.randn(2, 8000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 1, 8])
    """

    def __init__(self, compute_features, mean_var_norm, embedding_model):
        super().__init__()
        self.compute_features = compute_features
        self.mean_var_norm = mean_var_norm
        self.embedding_model = embedding_model

    def forward(self, wavs, wav_lens=None):
        """Embeddings [B, 1, E] of waveforms [B, S] with relative lengths [B]
        (None: all full length)."""
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        feats = self.compute_features(wavs)
        feats = self.mean_var_norm(feats, wav_lens)
        return self.embedding_model(feats, wav_lens)


class SpeechBrainSpeakerRecognition(W2VBertSpeakerRecognition):
    """This package's interface around a pretrained SpeechBrain speaker folder (the
    layout of ``speechbrain/spkrec-ecapa-voxceleb``: ``compute_features``,
    ``mean_var_norm`` and ``embedding_model`` modules and a ``pretrainer``).

    ``encode_batch`` gives the embeddings of SpeechBrain's ``EncoderClassifier`` (the
    modules run as :class:`SpeechBrainEncoderChain`, the ``embedding_model`` of
    ``mods``), so ``encode_files``, ``verify_files``, the extraction and the command
    line work as for exported models. Without ``sample_rate`` and ``threshold`` in the
    hyperparameters, they are 16000 (or the ``audio_normalizer``'s rate) and 0.25
    (``SpeakerRecognition.verify_batch``'s default). ``load_model`` loads a local
    folder offline (its ``pretrained_path`` overridden to the folder).

    Arguments
    ---------
    See ``speechbrain.inference.interfaces.Pretrained``; the modules need
    ``compute_features``, ``mean_var_norm`` and ``embedding_model``.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> from speechbrain.processing.features import InputNormalization
    >>> model = SpeechBrainSpeakerRecognition(
    ...     modules={
    ...         "compute_features": Fbank(n_mels=40),
    ...         "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
    ...         "embedding_model": ECAPA_TDNN(40, channels=[16, 16, 16, 16, 48], lin_neurons=8),
    ...     },
    ...     hparams={},
    ...     run_opts={"device": "cpu"},
    ... )
    >>> model.encode_batch(torch.randn(2, 8000)).shape, model.hparams.threshold
    (torch.Size([2, 1, 8]), 0.25)
    """

    HPARAMS_NEEDED = []
    CHAIN = ("compute_features", "mean_var_norm", "embedding_model")

    def __init__(self, modules=None, hparams=None, **kwargs):
        modules, hparams = dict(modules or {}), dict(hparams or {})
        missing = [name for name in self.CHAIN if modules.get(name) is None]
        if missing:
            raise ValueError(f"a SpeechBrain speaker model needs the modules {missing}")
        # compute_features and mean_var_norm stay modules too: Pretrained moves each
        # with its own to(), which InputNormalization needs for its statistics.
        modules["embedding_model"] = SpeechBrainEncoderChain(*(modules[n] for n in self.CHAIN))
        normalizer = hparams.get("audio_normalizer")
        hparams.setdefault("sample_rate", getattr(normalizer, "sample_rate", 16000))
        hparams.setdefault("threshold", 0.25)
        super().__init__(modules=modules, hparams=hparams, **kwargs)

    def encode_batch(self, wavs, wav_lens=None, normalize=False):
        """Speaker embeddings of a padded batch of waveforms, as SpeechBrain's
        ``EncoderClassifier.encode_batch`` computes them.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` (or ``[samples]``) at ``sample_rate``.
        wav_lens : torch.Tensor, optional
            ``[batch]`` relative lengths in (0, 1]; None: all full length.
        normalize : bool
            Normalize the embeddings with the folder's ``mean_var_norm_emb``.

        Returns
        -------
        torch.Tensor
            ``[batch, 1, embedding_size]`` float32.
        """
        embeddings = super().encode_batch(wavs, wav_lens)
        if normalize:
            norm = getattr(self.hparams, "mean_var_norm_emb", None)
            if norm is None:
                raise ValueError("normalize=True needs mean_var_norm_emb in the hyperparameters")
            embeddings = norm(embeddings, torch.ones(embeddings.shape[0], device=self.device))
        return embeddings


# What load_model accepts, for its errors.
SUPPORTED_MODELS = (
    f"an exported folder ({HPARAMS_FILE} + {WEIGHTS_FILE}), a SpeechBrain pretrained "
    "speaker folder (the layout of speechbrain/spkrec-ecapa-voxceleb), a training output "
    "folder (with save/), a checkpoint folder (with CKPT.yaml) or an .onnx file"
)


def _folder_kind(tree):
    """``"export"`` (this package's), ``"speechbrain"`` (a SpeechBrain speaker model:
    the ``EncoderClassifier`` modules, computing its own features) or None, from a
    parsed ``hyperparams.yaml``."""
    if not isinstance(tree, dict):
        return None
    modules = tree.get("modules")
    modules = modules if isinstance(modules, dict) else {}
    features = tree.get("compute_features", modules.get("compute_features"))
    tag = str(getattr(getattr(features, "tag", None), "value", None) or "")
    # Exports serve the stock chain with a PassThrough front (earlier paths included).
    if tag.endswith(".PassThrough") or "interface" in tree:
        return "export"
    if all(name in modules for name in SpeechBrainSpeakerRecognition.CHAIN):
        return "speechbrain"
    return None


def _pretrainer_files(tree):
    """Names of the files in the folder that a SpeechBrain ``hyperparams.yaml``'s
    pretrainer loads: those under ``<pretrained_path>/`` and, for loadables without a
    path, ``<name>.ckpt``."""
    pretrainer = tree.get("pretrainer")
    if not isinstance(pretrainer, dict):
        return []
    paths = pretrainer.get("paths") or {}
    files = []
    for name in pretrainer.get("loadables") or {}:
        given = paths.get(name)
        text = str(getattr(given, "value", given)) if given is not None else f"{name}.ckpt"
        if given is None or text.startswith("<pretrained_path>/"):
            files.append(text.rpartition("/")[2])
    return files


def load_model(path, memory_efficient_attention=None, **kwargs):
    """Loads an exported folder or a training run with the interface it names.

    The interface is the class named by ``interface`` in the hyperparameters:
    ``W2VBertSpeakerRecognition`` for speaker models, ``ASRSpeakerRecognition`` for
    a speaker adaptor (transcription too); a SpeechBrain pretrained speaker folder gets
    ``SpeechBrainSpeakerRecognition``, loaded offline from the folder.

    Arguments
    ---------
    path : str or os.PathLike
        Exported folder (``hyperparams.yaml`` + ``embedding_model.ckpt``), SpeechBrain
        pretrained speaker folder (the files of ``speechbrain/spkrec-ecapa-voxceleb``),
        training output folder, checkpoint folder, or an ``.onnx`` file (``from_onnx``).
    memory_efficient_attention : bool, optional
        Overrides the folder's choice of attention (see
        ``W2VBertSpeakerRecognition.use_memory_efficient_attention``; not used by an
        ONNX file, whose graph holds HF's attention).
    **kwargs
        Arguments of ``from_hparams`` (``run_opts``, ...), for a run those of
        the class and ``hparams_file``, ``overrides``, ``threshold``, for an ONNX
        file those of ``from_onnx``.

    Returns
    -------
    W2VBertSpeakerRecognition
    """
    path = pathlib.Path(path)
    check_device((kwargs.get("run_opts") or {}).get("device"))
    if path.suffix == ".onnx" and path.is_file():
        return W2VBertSpeakerRecognition.from_onnx(path, **kwargs)
    if (
        (path / WEIGHTS_FILE).is_file()
        and (path / HPARAMS_FILE).is_file()
        and not (path / "CKPT.yaml").is_file()
    ):
        try:
            tree = ruamel.yaml.YAML().load((path / HPARAMS_FILE).read_text(encoding="utf-8"))
        except YAMLError as error:
            raise yaml_error(path / HPARAMS_FILE, error) from None
        kind = _folder_kind(tree)
        if kind is None:
            raise ValueError(
                f"{path / HPARAMS_FILE}: neither this package's export nor a SpeechBrain "
                f"speaker model (modules compute_features, mean_var_norm, embedding_model); "
                f"supported: {SUPPORTED_MODELS}"
            )
        load_checkpoint_file(path / WEIGHTS_FILE)  # a damaged file: one line, not torch's traceback
        if kind == "speechbrain":
            missing = [f for f in _pretrainer_files(tree) if not (path / f).is_file()]
            if missing:
                raise ValueError(
                    f"{path}: SpeechBrain speaker folder without {', '.join(missing)} "
                    f"(its {HPARAMS_FILE} loads them; copy every file of the model)"
                )
            if "pretrained_path" in tree:
                # The pretrainer's paths name the hub repository: read the folder instead.
                overrides = kwargs.get("overrides") or {}
                kwargs["overrides"] = {"pretrained_path": str(path), **overrides}
            model = SpeechBrainSpeakerRecognition.from_hparams(source=str(path), **kwargs)
        else:
            model = interface_class(tree.get("interface")).from_hparams(source=str(path), **kwargs)
    elif not ((path / "CKPT.yaml").is_file() or (path / "save").is_dir()):
        raise ValueError(f"{path}: not a model folder: expected {SUPPORTED_MODELS}")
    else:
        run_args = {
            k: kwargs.pop(k) for k in ("hparams_file", "overrides", "threshold") if k in kwargs
        }
        hparams, _ = load_run(path, **run_args)
        interface = interface_class(hparams.get("interface"))
        model = interface(modules=hparams["modules"], hparams=hparams, **kwargs)
    if memory_efficient_attention is not None:
        model.use_memory_efficient_attention(memory_efficient_attention)
    return model


def interface_class(name=None):
    """The pretrained-interface class of a dotted name (None: the default one).

    Arguments
    ---------
    name : str, optional
        ``package.module.Class``, e.g. the ``interface`` of a ``hyperparams.yaml``.

    Returns
    -------
    type

    Example
    -------
    >>> interface_class().__name__
    'W2VBertSpeakerRecognition'
    """
    if not name:
        return W2VBertSpeakerRecognition
    module, _, cls = str(name).rpartition(".")
    found = getattr(importlib.import_module(module), cls, None) if module else None
    if not (isinstance(found, type) and issubclass(found, W2VBertSpeakerRecognition)):
        raise ValueError(f"interface {name!r} is not a W2VBertSpeakerRecognition class")
    return found


class ASRSpeakerRecognition(W2VBertSpeakerRecognition):
    """Pretrained interface of a speaker adaptor: verification and transcription.

    Everything of :class:`~speechbrain_w2vbert_sv.inference.interface.W2VBertSpeakerRecognition`
    (``encode_batch``, ``verify_batch``, ``verify_files``, ...) with a
    :class:`SpeakerAdaptorModel` as ``embedding_model``, plus transcription with the
    frozen ASR model; :meth:`transcribe_and_encode_batch` gives both from one pass.
    The hyperparameters also need ``tokens``: the CTC outputs' labels in index
    order (the blank included, as ``label_encoder.txt`` of the ASR recipe lists
    them, or the pieces of a SentencePiece ``tokenizer.ckpt``), and
    ``blank_index``; ``token_type: sentencepiece`` joins pieces into words (see
    :class:`~speechbrain_w2vbert_sv.data.ctc_tokens.CTCTokens`).

    Example
    -------
    >>> from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
    >>> from speechbrain_w2vbert_sv.lobes.asr_conformer import ConformerCTC
    >>> from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
    >>> from speechbrain_w2vbert_sv.lobes.heads import MFAHead
    >>> from speechbrain_w2vbert_sv.lobes.speaker_adaptor import SpeakerAdaptorModel
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
        tokens = CTCTokens.from_hparams(self.hparams)
        model = self.mods.embedding_model
        hyps = model.asr_model.greedy_decode(log_probs, lengths, tokens.blank_index)
        return [tokens.decode(hyp) for hyp in hyps]

    def transcribe_and_encode_batch(self, wavs, wav_lens=None):
        """Greedy CTC transcriptions and speaker embeddings of one encoder pass.

        Arguments
        ---------
        wavs, wav_lens : torch.Tensor
            Waveforms [B, S] and their relative lengths [B] (optional: all full length).

        Returns
        -------
        words : list of list of str
            The transcription of each utterance.
        embeddings : torch.Tensor
            Speaker embeddings [B, 1, E].
        """
        wavs, wav_lens = self._on_device(wavs, wav_lens)
        with torch.no_grad():
            out = self.mods.embedding_model.recognize_and_embed(wavs, wav_lens)
        return self._words(out.log_probs, out.lengths), out.embeddings

    def transcribe_batch(self, wavs, wav_lens=None):
        """Greedy CTC transcriptions (the ASR model alone: the adaptor is not run).

        Arguments
        ---------
        wavs, wav_lens : torch.Tensor
            Waveforms [B, S] and their relative lengths [B] (optional: all full length).

        Returns
        -------
        list of list of str
        """
        wavs, wav_lens = self._on_device(wavs, wav_lens)
        with torch.no_grad():
            out = self.mods.embedding_model.asr_model(wavs, wav_lens)
        return self._words(out.log_probs, out.lengths)
