"""CPU deployment: waveform-in ONNX graphs, int8 in torch and ONNX Runtime."""

import sys

import numpy as np
import onnx
import pytest
import soundfile
import torch
import torchaudio
from transformers import SeamlessM4TFeatureExtractor

from speechbrain_w2vbert_sv.cli import main as cli_main
from speechbrain_w2vbert_sv.inference import W2VBertSpeakerRecognition, export_model, load_model
from speechbrain_w2vbert_sv.inference.onnx_frontend import GraphFbank
from speechbrain_w2vbert_sv.inference.quantization import export_int8, quantize_dynamic_int8
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank
from tests.conftest import require_module
from tests.tiny_models import randomise_attention_scores
from tests.unittests.test_frontend import HARD_CLIPS
from tests.unittests.test_inference import make_training_run

onnxruntime = require_module("onnxruntime", "onnxruntime not installed")
require_module("onnxscript", "onnxscript not installed (the ONNX exporter needs it)")

from speechbrain_w2vbert_sv.inference.onnx import ONNXEmbeddingModel  # noqa: E402

# ONNX Runtime against torch, fp32 (embeddings of size ~4): measured 4.1e-6 (2.6e-6 to
# 7.2e-6 from other initial weights); one layer's q and k weights swapped moves them
# by 1.7e-2.
ATOL = 1e-5
# int8 against fp32: measured 0.9998 in torch, 0.9999 in ONNX Runtime (0.9996 at worst
# from other initial weights); weights rounded to 4 bits instead of 8 give 0.998 or less.
MIN_INT8_COSINE = 0.999


def swap_query_key(model, layer=1):
    """Swaps the q and k weights of one attention layer of an embedding model, in place."""
    attention = model.backbone.model.encoder.layers[layer].self_attn
    with torch.no_grad():
        query = attention.linear_q.weight.clone()
        attention.linear_q.weight.copy_(attention.linear_k.weight)
        attention.linear_k.weight.copy_(query)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    torch.manual_seed(0)  # the encoder's initial weights: the same whichever tests ran
    make_training_run(root / "run", lora_rank=0)
    out = export_model(root / "run", root / "exported", threshold=0.25)
    # Random q/k weights and distance tables: with HF's small initial values attention
    # is nearly uniform, and wrong scores or relative positions in the dynamic-length
    # graphs change the embeddings by less than the tolerance.
    weights = out / "embedding_model.ckpt"
    state = torch.load(weights, weights_only=True)
    # 2 layers: q and k weights and biases, distance table.
    assert len(randomise_attention_scores(state, seed=0)) == 2 * 5
    torch.save(state, weights)
    return out


@pytest.fixture(scope="module")
def onnx_files(exported, tmp_path_factory):
    """fp32 and int8 waveform-in files written by the command line."""
    root = tmp_path_factory.mktemp("onnx")
    files = {"fp32": root / "model.onnx", "int8": root / "model_int8.onnx"}
    for precision, options in (("fp32", []), ("int8", ["--int8"])):
        cli_main(
            ["onnx", "--model", str(exported), "--device", "cpu", "--waveform", *options]
            + ["--output", str(files[precision])]
        )
    return files


def real_speech_batch(shared_data, count=5, seed=0):
    """Clips of the corpus cut to random lengths (ragged padding), padded batch."""
    rng = np.random.default_rng(seed)
    paths = sorted((shared_data / "arabic_speech_commands" / "dataset").glob("*/*.flac"))
    wavs = []
    for path in rng.choice(paths, count, replace=False):
        audio, rate = soundfile.read(path, dtype="float32")
        assert rate == 16000
        wavs.append(torch.from_numpy(audio[: rng.integers(3000, len(audio) + 1)]))
    longest = max(len(w) for w in wavs)
    batch = torch.zeros(count, longest)
    for i, wav in enumerate(wavs):
        batch[i, : len(wav)] = wav
    # Padding beyond each utterance must not matter, even NaN.
    batch[0, len(wavs[0]) :] = float("nan")
    return batch, torch.tensor([len(w) / longest for w in wavs]), wavs


def test_front_end_graph_matches_hf_extractor_on_real_speech(shared_data, tmp_path):
    """The front end inside an ONNX graph, run by onnxruntime, against HF's extractor,
    on the clips that are hardest for the float32 FFT (band-limited, resampled) and
    random ones cut to random lengths."""
    _, _, clips = real_speech_batch(shared_data, count=6)
    for name in sorted(HARD_CLIPS):
        audio, rate = soundfile.read(shared_data / name, dtype="float32")
        clip = torch.from_numpy(audio)
        clips.append(torchaudio.functional.resample(clip, rate, 16000) if rate != 16000 else clip)
    longest = max(len(c) for c in clips)
    wavs = torch.stack([torch.nn.functional.pad(c, (0, longest - len(c))) for c in clips])
    lens = torch.tensor([len(c) / longest for c in clips])
    graph = GraphFbank(W2VBertFbank()).eval()
    path = tmp_path / "fbank.onnx"
    torch.onnx.export(
        graph,
        (wavs[:2], lens[:2]),
        str(path),
        input_names=["wavs", "wav_lens"],
        output_names=["feats", "feat_lens"],
        dynamo=True,
        dynamic_shapes=(
            {0: torch.export.Dim("batch"), 1: torch.export.Dim("samples", min=560)},
            {0: torch.export.Dim("batch")},
        ),
    )
    feats, feat_lens = onnxruntime.InferenceSession(str(path)).run(
        None, {"wavs": wavs.numpy(), "wav_lens": lens.numpy()}
    )
    extractor = SeamlessM4TFeatureExtractor()
    worst = 0.0
    for i, clip in enumerate(clips):
        out = extractor(clip.numpy(), sampling_rate=16000, return_tensors="np")
        expected = out["input_features"][0][out["attention_mask"][0].astype(bool)]
        valid = int(round(float(feat_lens[i]) * feats.shape[1]))
        assert valid == len(expected), i
        worst = max(worst, float(np.abs(feats[i, :valid] - expected).max()))
        assert not feats[i, valid:].any(), f"padded frames of utterance {i} not zero"
    print(f"front end in the graph: max abs difference to HF's extractor {worst:.2e}")
    assert worst <= 1e-3, worst


def test_waveform_onnx_matches_torch_on_padded_real_speech(exported, onnx_files, shared_data):
    model = load_model(exported, run_opts={"device": "cpu"})
    wavs, lens, _ = real_speech_batch(shared_data, seed=1)
    with torch.no_grad():
        expected = model.encode_batch(wavs, lens)
    runner = ONNXEmbeddingModel(onnx_files["fp32"])
    assert runner.info["input"] == "waveform" and runner.info["precision"] == "fp32"
    got = runner(wavs, lens)
    assert got.shape == expected.shape == (5, 1, 16)
    difference = float((got - expected).abs().max())
    print(f"waveform ONNX: max |onnxruntime - torch| = {difference:.3g}")
    assert difference < ATOL
    # The same comparison fails against the model with one layer's q and k swapped.
    perturbed = load_model(exported, run_opts={"device": "cpu"})
    swap_query_key(perturbed.mods.embedding_model)
    with torch.no_grad():
        swapped = float((got - perturbed.encode_batch(wavs, lens)).abs().max())
    print(f"waveform ONNX: max |onnxruntime - torch with q/k swapped| = {swapped:.3g}")
    assert swapped > ATOL
    # Each utterance alone gives its embedding in the batch (padding has no effect).
    alone = runner(wavs[2:3, : int(round(float(lens[2]) * wavs.shape[1]))])
    assert (alone - got[2:3]).abs().max() < ATOL

    # int8: close to the float graph, and not the same graph.
    int8 = ONNXEmbeddingModel(onnx_files["int8"])
    assert int8.info["precision"] == "int8"
    ops = {node.op_type for node in onnx.load(str(onnx_files["int8"])).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, ops
    quantized = int8(wavs, lens)
    cosine = torch.nn.functional.cosine_similarity(quantized[:, 0], got[:, 0])
    print(f"ONNX Runtime int8: min cosine to fp32 {float(cosine.min()):.6f}")
    assert cosine.min() > MIN_INT8_COSINE, cosine
    assert (quantized - got).abs().max() > 1e-6


def test_interface_runs_onnx_behind_encode_batch_and_verify_files(
    exported, onnx_files, shared_data, capsys
):
    torch_model = load_model(exported, run_opts={"device": "cpu"})
    onnx_model = load_model(onnx_files["fp32"])
    assert isinstance(onnx_model, W2VBertSpeakerRecognition)
    assert onnx_model.hparams.threshold == pytest.approx(0.25)  # recorded at export
    wavs, lens, _ = real_speech_batch(shared_data, seed=2)
    difference = onnx_model.encode_batch(wavs, lens) - torch_model.encode_batch(wavs, lens)
    assert difference.abs().max() < ATOL
    clips = sorted((shared_data / "arabic_speech_commands" / "dataset").glob("*/*.flac"))[:2]
    score, decision = onnx_model.verify_files(*clips)
    expected, _ = torch_model.verify_files(*clips)
    assert abs(float(score) - float(expected)) < ATOL
    assert bool(decision) == (float(score) > 0.25)
    cli_main(["verify", str(clips[0]), str(clips[1]), "--model", str(onnx_files["int8"])])
    assert "score" in capsys.readouterr().out.lower()


def test_int8_folder_round_trip(exported, tmp_path, shared_data):
    out = export_int8(exported, tmp_path / "int8")
    fp32 = load_model(exported, run_opts={"device": "cpu"})
    loaded = load_model(out, run_opts={"device": "cpu"})
    in_memory = quantize_dynamic_int8(fp32.mods.embedding_model)
    assert (
        type(loaded.mods.embedding_model.head.pooling).__name__
        == type(in_memory.head.pooling).__name__
    )
    quantized_layers = [
        m
        for m in loaded.mods.embedding_model.modules()
        if type(m).__module__.startswith("torch.ao.nn.quantized")
    ]
    assert len(quantized_layers) == len(
        [m for m in in_memory.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
    )
    assert quantized_layers
    wavs, lens, _ = real_speech_batch(shared_data, seed=3)
    with torch.no_grad():
        got = loaded.encode_batch(wavs, lens)
        expected = in_memory(wavs, lens)
        float_emb = fp32.encode_batch(wavs, lens)
    assert torch.equal(got, expected)  # the int8 weights were stored and read back
    assert not torch.equal(got, float_emb)
    cosine = torch.nn.functional.cosine_similarity(got[:, 0], float_emb[:, 0])
    print(f"torch int8: min cosine to fp32 {float(cosine.min()):.6f}")
    assert cosine.min() > MIN_INT8_COSINE, cosine
    # The command line's --precision int8 quantizes the float folder the same way.
    clips = sorted((shared_data / "arabic_speech_commands" / "dataset").glob("*/*.flac"))[:3]
    cli_main(
        [
            "embed",
            *map(str, clips),
            "--model",
            str(exported),
            "--device",
            "cpu",
            "--precision",
            "int8",
            "--output",
            str(tmp_path / "e.pt"),
            "--no_progress",
        ]
    )
    written = torch.load(tmp_path / "e.pt")["embeddings"]
    assert torch.equal(written, loaded.encode_files(clips, progress=False))
    with pytest.raises(ValueError, match="already quantized"):
        export_int8(out, tmp_path / "again")


def test_clear_errors(tmp_path, exported, monkeypatch):
    # An ONNX file that is not an embedding model of this package.
    other = tmp_path / "other.onnx"
    torch.onnx.export(
        torch.nn.Linear(4, 2), (torch.randn(1, 4),), str(other), input_names=["x"], dynamo=True
    )
    with pytest.raises(ValueError, match=r"other\.onnx: not an embedding model exported by"):
        ONNXEmbeddingModel(other)
    # Not an ONNX file at all.
    text = tmp_path / "notes.onnx"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.onnx: cannot be loaded as an ONNX model"):
        ONNXEmbeddingModel(text)
    with pytest.raises(SystemExit, match=r"w2vbert-sv verify: error: .*notes\.onnx: cannot be"):
        cli_main(["verify", "a.wav", "b.wav", "--model", str(text)])
    # onnxruntime missing.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        ONNXEmbeddingModel(other)
    with pytest.raises(ValueError, match="not a model folder of this package"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "hyperparams.yaml").write_text("threshold: 0.3\n")
        export_int8(tmp_path / "bad", tmp_path / "out")


def test_readme_snippet_embeds_files_with_onnxruntime_alone(
    exported, onnx_files, shared_data, tmp_path
):
    """The README's onnxruntime snippet, run with torch made unimportable."""
    import pathlib
    import re
    import subprocess

    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    snippet = next(b for b in blocks if 'InferenceSession("model.onnx"' in b)
    assert "import torch" not in snippet
    clips = sorted((shared_data / "arabic_speech_commands" / "dataset").glob("*/*.flac"))[:2]
    (tmp_path / "model.onnx").symlink_to(onnx_files["fp32"])
    (tmp_path / "a.flac").symlink_to(clips[0])
    (tmp_path / "b.flac").symlink_to(clips[1])
    program = "import sys\nsys.modules['torch'] = None\n" + snippet + "\nprint(score)\n"
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected, _ = load_model(exported, run_opts={"device": "cpu"}).verify_files(*clips)
    assert abs(float(done.stdout.split()[-1]) - float(expected)) < ATOL


def test_pruned_model_with_empty_layers_quantizes_in_torch_and_onnx(tmp_path, shared_data):
    from speechbrain_w2vbert_sv.inference.onnx import export_onnx
    from speechbrain_w2vbert_sv.lobes.embedding_model import SpeakerEmbeddingModel
    from speechbrain_w2vbert_sv.lobes.heads import MFAHead
    from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
    from speechbrain_w2vbert_sv.pruning import PrunedWav2Vec2BertConfig

    torch.manual_seed(0)
    config = PrunedWav2Vec2BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        layer_attention_heads=[2, 0],
        layer_ffn1_units=[0, 16],
        layer_ffn2_units=[8, 0],
        layer_conv_channels=[0, 8],
    )
    model = SpeakerEmbeddingModel(
        W2VBertFbank(),
        W2VBertBackbone(config=config),
        MFAHead(
            num_hidden_states=3,
            input_size=32,
            adapter_size=8,
            attention_channels=4,
            embedding_size=16,
        ),
    ).eval()
    assert any(m.weight.numel() == 0 for m in model.modules() if isinstance(m, torch.nn.Linear))
    wavs, lens, _ = real_speech_batch(shared_data, count=3, seed=4)
    with torch.no_grad():
        expected = model(wavs, lens)[:, 0]
        quantized = quantize_dynamic_int8(model)(wavs, lens)[:, 0]
    cosine = torch.nn.functional.cosine_similarity(quantized, expected)
    print(f"pruned, torch int8: min cosine to fp32 {float(cosine.min()):.6f}")
    assert cosine.min() > MIN_INT8_COSINE, cosine
    path = export_onnx(model, tmp_path / "pruned_int8.onnx", waveform=True, int8=True)
    got = ONNXEmbeddingModel(path)(wavs, lens)[:, 0]
    cosine = torch.nn.functional.cosine_similarity(got, expected)
    print(f"pruned, ONNX Runtime int8: min cosine to fp32 {float(cosine.min()):.6f}")
    assert cosine.min() > MIN_INT8_COSINE, cosine
