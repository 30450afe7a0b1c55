"""ONNX export of a speaker embedding model, and an onnxruntime runner.

Two graphs, both with dynamic batch and length:

- features in (default): ``(feats [B, T, F], feat_lens [B]) -> embeddings [B, E]``,
  the backbone and the head; the front end runs outside it (in torch,
  :class:`~speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertFbank`, or any equal
  implementation);
- waveform in (``waveform=True``): ``(wavs [B, S], wav_lens [B]) -> embeddings [B, E]``,
  the front end included (:class:`~speechbrain_w2vbert_sv.inference.onnx_frontend.GraphFbank`),
  so that ONNX Runtime alone computes embeddings from audio.

``int8=True`` quantizes the graph's matrix products with ONNX Runtime's dynamic
quantization (int8 weights, activations quantized per call). The file records what it
holds in its metadata (``speechbrain_w2vbert_sv.input``, ``sample_rate``,
``min_samples``, ``threshold``). Exporting needs ``onnx`` and ``onnxscript``; running
needs ``onnxruntime``.
"""

import logging
import os
import pathlib
import tempfile
import warnings

import torch

from speechbrain_w2vbert_sv.inference.onnx_frontend import GraphFbank
from speechbrain_w2vbert_sv.lobes.attention import (
    MemoryEfficientWav2Vec2BertSelfAttention,
    enable_memory_efficient_attention,
)
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank, check_waveform_batch

# Metadata key naming what a file of this package takes as input.
INPUT_KEY = "speechbrain_w2vbert_sv.input"
_INPUT_NAMES = {"features": ["feats", "feat_lens"], "waveform": ["wavs", "wav_lens"]}


class _ToEmbedding(torch.nn.Module):
    """(Front end,) backbone and head of an embedding model, with [B, E] output."""

    def __init__(self, backbone, head, frontend=None):
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone
        self.head = head

    def forward(self, inputs, input_lens):
        if self.frontend is not None:
            inputs, input_lens = self.frontend(inputs, input_lens)
        hidden_states, lengths = self.backbone(inputs, input_lens)
        return self.head(hidden_states, lengths).squeeze(1)


def export_onnx(
    embedding_model,
    path,
    opset_version=18,
    example_seconds=1.0,
    waveform=False,
    int8=False,
    threshold=None,
):
    """Exports an embedding model to an ONNX file.

    Arguments
    ---------
    embedding_model : SpeakerEmbeddingModel
        The model (``frontend``, ``backbone``, ``head``); e.g. ``mods.embedding_model``
        of a loaded ``W2VBertSpeakerRecognition``; float32, pruned or not.
    path : str or os.PathLike
        ONNX file to write.
    opset_version : int
        ONNX opset.
    example_seconds : float
        Duration of the example input traced (any duration works afterwards).
    waveform : bool
        Include the front end: waveforms in (needs a ``W2VBertFbank`` front end).
    int8 : bool
        Quantize the matrix products to int8 (ONNX Runtime dynamic quantization).
    threshold : float, optional
        Decision threshold recorded in the metadata (for ``W2VBertSpeakerRecognition``).

    Returns
    -------
    str or os.PathLike
        ``path``. Weights over 2 GB (the full fp32 model: 2.3 GB) are written beside it
        to ``<path>.data`` (an ONNX file cannot hold more).
    """
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as error:
        raise ImportError(
            "ONNX export needs onnx and onnxscript: pip install onnx onnxscript"
        ) from error
    frontend = embedding_model.frontend
    if not isinstance(frontend, W2VBertFbank):
        # The graph's front end and its length rules are w2v-BERT's (GraphFbank).
        raise ValueError(
            "ONNX export takes w2v-BERT models (W2VBertFbank front end), this one has "
            f"{type(frontend).__name__}"
        )
    graph_frontend = GraphFbank(frontend) if waveform else None
    model = _ToEmbedding(embedding_model.backbone, embedding_model.head, graph_frontend).eval()
    samples = int(example_seconds * frontend.sample_rate)
    wavs = torch.zeros(2, samples).normal_(std=0.1)
    wav_lens = torch.tensor([1.0, 0.7])
    if waveform:
        example = (wavs, wav_lens)
        dims = {
            0: torch.export.Dim("batch", min=1, max=4096),
            1: torch.export.Dim("samples", min=frontend.min_samples, max=100_000_000),
        }
    else:
        with torch.no_grad():
            feats, feat_lens = frontend(wavs, wav_lens)
        example = (feats.float(), feat_lens.float())
        dims = {
            0: torch.export.Dim("batch", min=1, max=4096),
            1: torch.export.Dim("frames", min=2, max=1_000_000),
        }
    # Parameters that require gradients make torch.export trace HF's attention
    # reshape into an invalid view with dynamic shapes: export frozen, then restore.
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)
    # The memory-efficient attention loops over a length-dependent number of query
    # chunks, which a dynamic-length graph cannot hold: HF's attention is exported.
    efficient = any(
        isinstance(m, MemoryEfficientWav2Vec2BertSelfAttention) for m in model.modules()
    )
    enable_memory_efficient_attention(model, enabled=False)
    kind = "waveform" if waveform else "features"
    try:
        with warnings.catch_warnings():
            # Both inputs share the batch dimension, which torch reports as a warning.
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
            program = torch.onnx.export(
                model,
                example,
                input_names=_INPUT_NAMES[kind],
                output_names=["embeddings"],
                dynamic_shapes=(dims, {0: dims[0]}),
                opset_version=opset_version,
                dynamo=True,
                verbose=False,
            )
    finally:
        for param in trainable:
            param.requires_grad_(True)
        if efficient:
            enable_memory_efficient_attention(model)
    metadata = {
        INPUT_KEY: kind,
        "sample_rate": str(frontend.sample_rate),
        "min_samples": str(frontend.min_samples),
        "precision": "fp32",  # quantize_onnx marks its output int8
    }
    if threshold is not None:
        metadata["threshold"] = str(float(threshold))
    program.model.metadata_props.update(metadata)
    if not int8:
        program.save(os.fspath(path))
        return path
    with tempfile.TemporaryDirectory() as tmp:
        float_path = pathlib.Path(tmp) / "float.onnx"
        program.save(os.fspath(float_path))
        del program
        quantize_onnx(float_path, path)
    return path


def quantize_onnx(float_path, path):
    """Dynamic int8 quantization of an ONNX graph's matrix products.

    Arguments
    ---------
    float_path : str or os.PathLike
        Float ONNX file (e.g. written by ``export_onnx``).
    path : str or os.PathLike
        Quantized file to write (metadata kept, ``precision`` set to int8).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Layers pruned to zero width keep their (empty) float weights: the quantizer
    # cannot take an empty tensor.
    graph = onnx.load(os.fspath(float_path), load_external_data=False).graph
    empty = {i.name for i in graph.initializer if 0 in i.dims}
    excluded = [
        n.name
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in empty
    ]
    del graph

    # The front end's float64 DFT products are left in float64 on purpose; the
    # quantizer logs a warning for each of them.
    root = logging.getLogger()
    skip_double = _DropMessages("Inference failed or unsupported type to quantize")
    root.addFilter(skip_double)
    try:
        quantize_dynamic(
            os.fspath(float_path),
            os.fspath(path),
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.removeFilter(skip_double)
    model = onnx.load(os.fspath(path))
    for prop in model.metadata_props:
        if prop.key == "precision":
            prop.value = "int8"
    onnx.save(model, os.fspath(path))


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with a prefix."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not str(record.msg).startswith(self.prefix)


def read_onnx_info(path, session=None):
    """What an ONNX file of this package takes as input, and its settings.

    Files exported before the metadata existed (features in) are told by their input
    names.

    Arguments
    ---------
    path : str or os.PathLike
        An ONNX file.
    session : onnxruntime.InferenceSession, optional
        A session of it, if already open.

    Returns
    -------
    dict
        ``input`` ("features" or "waveform") and the other metadata (strings).

    Raises
    ------
    ValueError
        The file is not a model, or not one of this package; the message names it.
    """
    if session is None:
        session = _session(path)
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    names = [i.name for i in session.get_inputs()]
    kind = metadata.pop(INPUT_KEY, None)
    if kind is None and names == _INPUT_NAMES["features"]:
        kind = "features"  # written before the metadata existed
    if kind not in _INPUT_NAMES or names != _INPUT_NAMES[kind]:
        raise ValueError(
            f"{path}: not an embedding model exported by speechbrain_w2vbert_sv "
            f"(inputs {names}, expected {_INPUT_NAMES['waveform']} or "
            f"{_INPUT_NAMES['features']})"
        )
    return {"input": kind, **metadata}


def _session(path, providers=None, num_threads=None):
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "running ONNX models needs onnxruntime: pip install onnxruntime"
        ) from None
    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    try:
        return onnxruntime.InferenceSession(
            os.fspath(path), options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own exception types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: cannot be loaded as an ONNX model ({first})") from None


class ONNXEmbeddingModel(torch.nn.Module):
    """Runs an exported ONNX graph as a drop-in embedding model.

    Same contract as ``SpeakerEmbeddingModel``: ``(wavs [B, S], wav_lens [B]) ->
    [B, 1, E]``, so it works with ``extraction.embed_files`` and behind
    ``W2VBertSpeakerRecognition.from_onnx``. A waveform-in graph runs alone (the
    input is checked here); a features-in graph runs behind ``frontend``.

    Arguments
    ---------
    path : str or os.PathLike
        File written by ``export_onnx``.
    frontend : torch.nn.Module, optional
        The front end of a features-in graph (e.g. ``W2VBertFbank()``).
    providers : list of str, optional
        onnxruntime execution providers (default: CPU).
    num_threads : int, optional
        onnxruntime intra-op threads (default: onnxruntime's).
    """

    def __init__(self, path, frontend=None, providers=None, num_threads=None):
        super().__init__()
        self.session = _session(path, providers, num_threads)
        self.info = read_onnx_info(path, self.session)
        if self.info["input"] == "features" and frontend is None:
            raise ValueError(f"{path} takes fbank features: give its frontend")
        self.frontend = frontend if self.info["input"] == "features" else None
        self.min_samples = int(self.info.get("min_samples", 1))

    def forward(self, wavs, wav_lens=None):
        """Embeddings [B, 1, E] of a padded waveform batch (computed on the CPU)."""
        if self.frontend is not None:
            inputs, lens = self.frontend(wavs, wav_lens)
        else:
            inputs, num_samples = check_waveform_batch(wavs, wav_lens, self.min_samples)
            lens = num_samples.double() / inputs.shape[1]
        names = _INPUT_NAMES[self.info["input"]]
        out = self.session.run(
            None,
            {
                names[0]: inputs.detach().float().cpu().numpy(),
                names[1]: lens.detach().float().cpu().numpy(),
            },
        )[0]
        return torch.from_numpy(out)[:, None]
