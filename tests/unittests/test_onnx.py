"""ONNX export of a tiny embedding model: parity with PyTorch under onnxruntime."""

import torch

from speechbrain_w2vbert_sv.inference.extraction import embed_files
from speechbrain_w2vbert_sv.lobes.attention import (
    MemoryEfficientWav2Vec2BertSelfAttention,
    enable_memory_efficient_attention,
)
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank
from tests.conftest import require_module
from tests.tiny_models import randomise_attention_scores, small_w2vbert_model

require_module("onnxruntime", "onnxruntime not installed (pip install onnxruntime)")
require_module("onnxscript", "onnxscript not installed (torch's ONNX exporter needs it)")

from speechbrain_w2vbert_sv.inference.onnx import ONNXEmbeddingModel, export_onnx  # noqa: E402

# Measured differences: below 2e-7; one layer's q and k weights swapped moves them
# by 1.4e-3.
ATOL = 1e-5


def test_onnx_matches_pytorch_for_any_batch_and_length(tmp_path):
    model = small_w2vbert_model().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.head.pooling.attention[2].running_mean.normal_()
    # Random q/k weights and distance tables: with HF's small initial values attention
    # is nearly uniform, and wrong scores or relative positions change the output by
    # less than 1e-5.
    randomise_attention_scores(model, seed=1)
    # As loaded for inference: on the memory-efficient attention path.
    assert enable_memory_efficient_attention(model) == 2
    path = export_onnx(model, tmp_path / "model.onnx")
    # Restored after the export.
    assert all(p.requires_grad for p in model.parameters())
    efficient = [m for m in model.modules() if type(m) is MemoryEfficientWav2Vec2BertSelfAttention]
    assert len(efficient) == 2
    runner = ONNXEmbeddingModel(path, W2VBertFbank())
    gen = torch.Generator().manual_seed(1)
    # Shapes other than the traced one (batch 2, 1 s), padding included; lengths well
    # past the relative-position window (8 frames left, 4 right).
    for batch, samples, lens in [(1, 40000, [1.0]), (4, 9000, [1.0, 0.5, 0.75, 0.3])]:
        wavs = 0.1 * torch.randn(batch, samples, generator=gen)
        lens = torch.tensor(lens)
        with torch.no_grad():
            expected = model(wavs, lens)
        got = runner(wavs, lens)
        assert got.shape == expected.shape == (batch, 1, 16)
        difference = float((got - expected).abs().max())
        print(f"ONNX: max |onnxruntime - torch| = {difference:.3g} ({batch} x {samples})")
        assert difference < ATOL
    # The same comparison fails against the model with one layer's q and k swapped.
    attention = model.backbone.model.encoder.layers[1].self_attn
    with torch.no_grad():
        query = attention.linear_q.weight.clone()
        attention.linear_q.weight.copy_(attention.linear_k.weight)
        attention.linear_k.weight.copy_(query)
        perturbed = model(wavs, lens)
    swapped = float((got - perturbed).abs().max())
    print(f"ONNX: max |onnxruntime - torch with q/k swapped| = {swapped:.3g}")
    assert swapped > ATOL
    with torch.no_grad():
        attention.linear_k.weight.copy_(attention.linear_q.weight)
        attention.linear_q.weight.copy_(query)

    # The runner is a drop-in embedding model for file extraction.
    import soundfile

    soundfile.write(tmp_path / "a.wav", 0.1 * torch.randn(12000, generator=gen).numpy(), 16000)
    files = [tmp_path / "a.wav"]
    ours = embed_files(runner, files, progress=False)
    assert (ours - embed_files(model, files, progress=False)).abs().max() < ATOL
