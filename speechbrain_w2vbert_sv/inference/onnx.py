"""ONNX export of a speaker embedding model, and an onnxruntime runner.

The exported graph runs the backbone and the head: ``(feats [B, T, F], feat_lens
[B]) -> embeddings [B, E]`` with dynamic batch and length. The waveform front end stays
outside it (computed by :class:`~speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertFbank` in
torch, or by any equal implementation, e.g. HF's ``SeamlessM4TFeatureExtractor``):
its input checks and fast paths branch on tensor values, which ``torch.export``
cannot capture. Exporting needs ``onnx`` and ``onnxscript``; running needs
``onnxruntime``.
"""

import os
import warnings

import torch

from speechbrain_w2vbert_sv.lobes.attention import (
    MemoryEfficientWav2Vec2BertSelfAttention,
    enable_memory_efficient_attention,
)


class _FeaturesToEmbedding(torch.nn.Module):
    """Backbone and head of an embedding model, with [B, E] output."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, feats, feat_lens):
        hidden_states, lengths = self.backbone(feats, feat_lens)
        return self.head(hidden_states, lengths).squeeze(1)


def export_onnx(embedding_model, path, opset_version=18, example_seconds=1.0):
    """Exports the backbone and head of an embedding model to an ONNX file.

    Arguments
    ---------
    embedding_model : SpeakerEmbeddingModel
        The model (``frontend``, ``backbone``, ``head``); e.g. ``mods.embedding_model``
        of a loaded ``W2VBertSpeakerRecognition``.
    path : str or os.PathLike
        ONNX file to write.
    opset_version : int
        ONNX opset.
    example_seconds : float
        Duration of the example input traced (any duration works afterwards).

    Returns
    -------
    str
        ``path``; the weights are written beside it to ``<path>.data`` (an ONNX
        file cannot hold more than 2 GB, the full model's weights are 2.3 GB).
    """
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as error:
        raise ImportError(
            "ONNX export needs onnx and onnxscript: pip install onnx onnxscript"
        ) from error
    model = _FeaturesToEmbedding(embedding_model.backbone, embedding_model.head).eval()
    samples = int(example_seconds * embedding_model.frontend.sample_rate)
    with torch.no_grad():
        feats, feat_lens = embedding_model.frontend(
            torch.zeros(2, samples).normal_(std=0.1), torch.tensor([1.0, 0.7])
        )
    batch = torch.export.Dim("batch", min=1, max=4096)
    frames = torch.export.Dim("frames", min=2, max=1_000_000)
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
    try:
        with warnings.catch_warnings():
            # Both inputs share the batch dimension, which torch reports as a warning.
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
            torch.onnx.export(
                model,
                (feats.float(), feat_lens.float()),
                os.fspath(path),
                input_names=["feats", "feat_lens"],
                output_names=["embeddings"],
                dynamic_shapes=({0: batch, 1: frames}, {0: batch}),
                opset_version=opset_version,
                dynamo=True,
                verbose=False,
            )
    finally:
        for param in trainable:
            param.requires_grad_(True)
        if efficient:
            enable_memory_efficient_attention(model)
    return path


class ONNXEmbeddingModel(torch.nn.Module):
    """Runs an exported ONNX graph behind a torch front end, as a drop-in model.

    Same contract as ``SpeakerEmbeddingModel``: ``(wavs [B, S], wav_lens [B]) ->
    [B, 1, E]``, so it works with ``extraction.embed_files``.

    Arguments
    ---------
    path : str or os.PathLike
        File written by ``export_onnx``.
    frontend : torch.nn.Module
        The model's front end (e.g. ``W2VBertFbank()``).
    providers : list of str, optional
        onnxruntime execution providers (default: CPU).
    """

    def __init__(self, path, frontend, providers=None):
        super().__init__()
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError("running ONNX models needs onnxruntime: pip install onnxruntime") from error
        self.frontend = frontend
        self.session = onnxruntime.InferenceSession(
            os.fspath(path), providers=providers or ["CPUExecutionProvider"]
        )

    def forward(self, wavs, wav_lens=None):
        """Embeddings [B, 1, E] of a padded waveform batch (computed on the CPU)."""
        feats, feat_lens = self.frontend(wavs, wav_lens)
        out = self.session.run(
            None,
            {
                "feats": feats.detach().float().cpu().numpy(),
                "feat_lens": feat_lens.detach().float().cpu().numpy(),
            },
        )[0]
        return torch.from_numpy(out)[:, None]
