"""Export of training runs, the pretrained interface and the command line."""

import os
import pathlib

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from hyperpyyaml import load_hyperpyyaml, resolve_references
from speechbrain.inference.classifiers import EncoderClassifier
from speechbrain.inference.speaker import SpeakerRecognition
from transformers.models.wav2vec2_bert.modeling_wav2vec2_bert import (
    Wav2Vec2BertSelfAttention,
)

from speechbrain_w2vbert_sv.cli import main as cli_main
from speechbrain_w2vbert_sv.inference.export import export_model
from speechbrain_w2vbert_sv.inference.interface import W2VBertSpeakerRecognition, load_model
from speechbrain_w2vbert_sv.inference.model_yaml import model_settings
from speechbrain_w2vbert_sv.lobes.attention import enable_memory_efficient_attention
from speechbrain_w2vbert_sv.training.checkpoints import AtomicCheckpointer

MODEL_YAML = pathlib.Path(__file__).resolve().parents[2] / "hparams" / "w2vbert_mfa.yaml"

# A training yaml as a recipe writes it: the model definition included with overrides.
TRAIN_YAML = """\
output_folder: {output}
model: !include:{model_yaml}
    w2vbert_source: null
    w2vbert_config:
        hidden_size: 32
        num_hidden_layers: 2
        num_attention_heads: 4
        intermediate_size: 64
        left_max_position_embeddings: 8
        right_max_position_embeddings: 4
    num_hidden_states: 3
    hidden_size: 32
    adapter_size: 8
    attention_channels: 4
    embedding_size: 16
    freeze_backbone: True
    lora_rank: {lora_rank}
    lora_alpha: 8
embedding_model: !ref <model[embedding_model]>
classifier: !new:torch.nn.Linear [16, 5]
"""


def _randomise(model, seed):
    """Random LoRA B (zero at init: merging would change nothing) and BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "head" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=gen))


def make_training_run(folder, lora_rank=4, checkpoints=((0.2, 0),)):
    """A training output folder as SpeechBrain training leaves it.

    ``<folder>/hyperparams.yaml`` (the resolved copy of the training yaml) and one
    checkpoint per ``(EER, seed)`` in ``<folder>/save``, saved in that order.
    Returns ``{EER: trained embedding model}`` (eval mode).
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train_yaml = folder.parent / f"{folder.name}_train.yaml"
    train_yaml.write_text(
        TRAIN_YAML.format(output=folder, model_yaml=MODEL_YAML, lora_rank=lora_rank)
    )
    with open(train_yaml) as f:  # what sb.create_experiment_directory writes
        (folder / "hyperparams.yaml").write_text(resolve_references(f).getvalue())
    models = {}
    for eer, seed in checkpoints:
        hparams = load_hyperpyyaml(train_yaml.read_text())
        model = hparams["embedding_model"]
        _randomise(model, seed)
        checkpointer = AtomicCheckpointer(
            folder / "save",
            {"embedding_model": model, "classifier": hparams["classifier"]},
        )
        checkpointer.save_checkpoint(meta={"EER": eer})
        models[eer] = model.eval()
    return models


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(training run folder, exported folder, trained model with LoRA)."""
    root = tmp_path_factory.mktemp("export")
    trained = make_training_run(root / "run")[0.2]
    out = export_model(root / "run", root / "exported", threshold=0.4)
    return root / "run", out, trained


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(3, 12000, generator=gen), torch.tensor([1.0, 0.55, 0.8])


def test_export_loads_offline_and_matches_trained_model(exported):
    run, out, trained = exported
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "embedding_model.ckpt",
        "hyperparams.yaml",
    ]
    card = (out / "README.md").read_text()  # the model card
    assert "Trained with `speechbrain_w2vbert_sv`" in card and "from_hparams" in card
    text = (out / "hyperparams.yaml").read_text()
    assert "!include" not in text and "threshold: 0.4" in text
    state = torch.load(out / "embedding_model.ckpt", weights_only=True)
    assert not any("lora" in key for key in state)  # merged

    model = W2VBertSpeakerRecognition.from_hparams(source=str(out))
    wavs, lens = _batch()
    with torch.no_grad():
        expected = trained(wavs, lens)
    got = model.encode_batch(wavs, lens)
    assert got.shape == (3, 1, 16)
    assert (got - expected).abs().max() < 1e-5
    # Inference runs the memory-efficient attention path by default.
    assert enable_memory_efficient_attention(model.mods.embedding_model) == 2
    assert not any(
        type(m) is Wav2Vec2BertSelfAttention for m in model.mods.embedding_model.modules()
    )
    # The LoRA update mattered: the base weights alone give other embeddings.
    base_state = {
        k.replace(".base_layer", ""): v for k, v in trained.state_dict().items() if "lora_" not in k
    }
    plain = load_hyperpyyaml((out / "hyperparams.yaml").read_text())["embedding_model"]
    plain.load_state_dict(base_state)
    with torch.no_grad():
        assert (plain.eval()(wavs, lens) - expected).abs().max() > 1e-3


def test_stock_speechbrain_classes_load_the_export(exported):
    _, out, trained = exported
    wavs, lens = _batch(1)
    with torch.no_grad():
        expected = trained(wavs, lens)
    ours = W2VBertSpeakerRecognition.from_hparams(source=str(out))
    for cls in (EncoderClassifier, SpeakerRecognition):
        stock = cls.from_hparams(source=str(out))
        assert (stock.encode_batch(wavs, lens) - expected).abs().max() < 1e-5
    stock_score, _ = stock.verify_batch(wavs, wavs.flip(0), lens, lens.flip(0))
    our_score, _ = ours.verify_batch(wavs, wavs.flip(0), lens, lens.flip(0))
    assert torch.allclose(stock_score, our_score, atol=1e-6)


def test_from_run_uses_the_best_checkpoint(tmp_path):
    # The best (lowest EER) checkpoint is the older one.
    models = make_training_run(tmp_path / "run", checkpoints=((0.1, 1), (0.3, 2)))
    wavs, lens = _batch(2)
    with torch.no_grad():
        best, last = models[0.1](wavs, lens), models[0.3](wavs, lens)
    assert (best - last).abs().max() > 1e-3
    from_run = load_model(tmp_path / "run")
    assert (from_run.encode_batch(wavs, lens) - best).abs().max() < 1e-5
    # A checkpoint folder is taken as it is.
    newest = max((tmp_path / "run" / "save").glob("CKPT+*"), key=os.path.getmtime)
    from_ckpt = W2VBertSpeakerRecognition.from_run(newest)
    assert (from_ckpt.encode_batch(wavs, lens) - last).abs().max() < 1e-5


def test_export_of_a_run_without_lora(tmp_path):
    trained = make_training_run(tmp_path / "run", lora_rank=0)[0.2]
    out = export_model(tmp_path / "run", tmp_path / "out")
    wavs, lens = _batch(3)
    with torch.no_grad():
        expected = trained(wavs, lens)
    got = W2VBertSpeakerRecognition.from_hparams(source=str(out)).encode_batch(wavs, lens)
    assert (got - expected).abs().max() < 1e-5


def test_threshold_and_decisions(exported):
    _, out, _ = exported
    model = W2VBertSpeakerRecognition.from_hparams(source=str(out))
    assert model.hparams.threshold == 0.4
    wavs, lens = _batch(4)
    score, decision = model.verify_batch(wavs, wavs, lens, lens)
    assert torch.allclose(score, torch.ones(3, 1), atol=1e-5) and decision.all()
    _, decision = model.verify_batch(wavs, wavs, lens, lens, threshold=1.5)
    assert not decision.any()
    score, decision = model.verify_batch(wavs, wavs.flip(0), lens, lens.flip(0))
    assert torch.equal(decision, score > 0.4)


def test_bad_input_messages(exported, tmp_path):
    run, out, _ = exported
    model = W2VBertSpeakerRecognition.from_hparams(source=str(out))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        model.encode_batch(torch.zeros(2, 2, 16000))
    with pytest.raises(ValueError, match="normalize"):
        model.encode_batch(torch.zeros(1, 16000), normalize=True)
    with pytest.raises(ValueError, match="missing file"):
        model.verify_files(tmp_path / "nowhere.wav", tmp_path / "nowhere.wav")
    with pytest.raises(ValueError, match="not a model folder"):
        load_model(tmp_path)
    (tmp_path / "other.yaml").write_text("lr: 0.1\n")
    with pytest.raises(ValueError, match="no `model` section"):
        model_settings(tmp_path / "other.yaml")
    # A checkpoint that does not fit the configuration given to the export.
    with pytest.raises(ValueError, match="does not fit"):
        export_model(run, tmp_path / "bad", overrides={"model": {"embedding_size": 8}})


def test_verify_files_resamples_and_downmixes(exported, shared_data, tmp_path):
    _, out, _ = exported
    model = W2VBertSpeakerRecognition.from_hparams(source=str(out))
    asc = shared_data / "arabic_speech_commands" / "dataset"
    clip_a, clip_b = asc / "five" / "00000007_NO_01.flac", asc / "send" / "00000007_NO_02.flac"
    score, decision = model.verify_files(clip_a, clip_b)
    assert score.shape == (1,) and decision.dtype == torch.bool
    assert -1.0 <= float(score) <= 1.0
    assert bool(decision) == (float(score) > 0.4)
    # The score is the cosine of these two files' own embeddings (not, say, of one
    # file with itself or of a batch padded together), and a file matches itself.
    emb_a, emb_b = (
        model.encode_batch(model.load_audio(c)[None]).double().flatten() for c in (clip_a, clip_b)
    )
    cosine = torch.dot(emb_a, emb_b) / (emb_a.norm() * emb_b.norm())
    assert abs(float(score) - float(cosine)) < 1e-5
    assert float(model.verify_files(clip_a, clip_a)[0]) == pytest.approx(1.0, abs=1e-5)

    # 8 kHz FSDD clip: the same embedding as the clip resampled independently.
    fsdd = next(iter(sorted((shared_data / "fsdd" / "recordings").glob("*.flac"))))
    data, rate = soundfile.read(fsdd, dtype="float32")
    assert rate == 8000
    resampled = torchaudio.functional.resample(torch.from_numpy(data), 8000, 16000)
    from_file = model.encode_batch(model.load_audio(fsdd)[None])
    assert (from_file - model.encode_batch(resampled[None])).abs().max() < 1e-5
    score, _ = model.verify_files(fsdd, clip_a)
    assert -1.0 <= float(score) <= 1.0
    assert (
        abs(
            float(score)
            - float(
                torch.nn.functional.cosine_similarity(from_file.flatten(), emb_a.float(), dim=0)
            )
        )
        < 1e-5
    )

    # Two channels are averaged.
    left, _ = soundfile.read(clip_a, dtype="float32")
    right, _ = soundfile.read(asc / "five" / "00000002_NO_01.flac", dtype="float32")
    n = min(len(left), len(right))
    stereo = tmp_path / "stereo.wav"
    soundfile.write(stereo, np.stack([left[:n], right[:n]], axis=1), 16000, subtype="FLOAT")
    mono = torch.from_numpy((left[:n] + right[:n]) / 2)
    expected = model.encode_batch(mono[None])
    assert (model.encode_batch(model.load_audio(stereo)[None]) - expected).abs().max() < 1e-5


def test_cli_verify_embed_export(exported, shared_data, tmp_path, capsys):
    run, out, _ = exported
    asc = shared_data / "arabic_speech_commands"
    files = ["dataset/five/00000007_NO_01.flac", "dataset/send/00000007_NO_02.flac"]
    cli_main(["verify", "--model", str(out), str(asc / files[0]), str(asc / files[1])])
    line = capsys.readouterr().out.strip()
    model = W2VBertSpeakerRecognition.from_hparams(source=str(out))
    score, _ = model.verify_files(asc / files[0], asc / files[1])
    assert line.startswith(f"score={float(score):.4f} threshold=0.4000 decision=")

    file_list = tmp_path / "list.txt"
    file_list.write_text("\n".join(files + files[:1]) + "\n")  # a duplicate
    output = tmp_path / "emb.npz"
    cli_main(
        [
            "embed",
            str(file_list),
            "--data_folder",
            str(asc),
            "--output",
            str(output),
            "--model",
            str(out),
            "--no_progress",
        ]
    )
    saved = np.load(output)
    assert saved["ids"].tolist() == files
    for row, name in zip(saved["embeddings"], files):
        expected = model.encode_batch(model.load_audio(asc / name)[None]).reshape(-1)
        assert np.abs(row - expected.numpy()).max() < 1e-5

    cli_main(
        [
            "export",
            "--run",
            str(run),
            "--output",
            str(tmp_path / "again"),
            "--threshold",
            "0.25",
            "--no_check",
        ]
    )
    again = W2VBertSpeakerRecognition.from_hparams(source=str(tmp_path / "again"))
    assert again.hparams.threshold == 0.25
    with pytest.raises(SystemExit, match="not a model folder"):
        cli_main(["verify", "--model", str(tmp_path), "a.wav", "b.wav"])
