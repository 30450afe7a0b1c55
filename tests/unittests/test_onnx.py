"""ONNX export of a tiny embedding model: parity with PyTorch under onnxruntime."""

import pytest
import torch

from speechbrain_w2vbert_sv.inference.extraction import embed_files
from speechbrain_w2vbert_sv.lobes.attention import (
    MemoryEfficientWav2Vec2BertSelfAttention,
    enable_memory_efficient_attention,
)
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank
from tests.tiny_models import small_w2vbert_model

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install onnxruntime)")
pytest.importorskip(
    "onnxscript", reason="onnxscript not installed (torch's ONNX exporter needs it)"
)

from speechbrain_w2vbert_sv.inference.onnx import ONNXEmbeddingModel, export_onnx  # noqa: E402


def test_onnx_matches_pytorch_for_any_batch_and_length(tmp_path):
    model = small_w2vbert_model().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.head.pooling.attention[2].running_mean.normal_()
    # As loaded for inference: on the memory-efficient attention path.
    assert enable_memory_efficient_attention(model) == 2
    path = export_onnx(model, tmp_path / "model.onnx")
    # Restored after the export.
    assert all(p.requires_grad for p in model.parameters())
    efficient = [m for m in model.modules() if type(m) is MemoryEfficientWav2Vec2BertSelfAttention]
    assert len(efficient) == 2
    runner = ONNXEmbeddingModel(path, W2VBertFbank())
    gen = torch.Generator().manual_seed(1)
    # Shapes other than the traced one (batch 2, 1 s), padding included.
    for batch, samples, lens in [(1, 40000, [1.0]), (4, 9000, [1.0, 0.5, 0.75, 0.3])]:
        wavs = 0.1 * torch.randn(batch, samples, generator=gen)
        lens = torch.tensor(lens)
        with torch.no_grad():
            expected = model(wavs, lens)
        got = runner(wavs, lens)
        assert got.shape == expected.shape == (batch, 1, 16)
        assert (got - expected).abs().max() < 1e-5

    # The runner is a drop-in embedding model for file extraction.
    import soundfile

    soundfile.write(tmp_path / "a.wav", 0.1 * torch.randn(12000, generator=gen).numpy(), 16000)
    files = [tmp_path / "a.wav"]
    ours = embed_files(runner, files, progress=False)
    assert (ours - embed_files(model, files, progress=False)).abs().max() < 1e-5
