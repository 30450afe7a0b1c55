"""SpeechBrain's own pretrained speaker folders in load_model and the command line.

The folder is written as ``speechbrain/spkrec-ecapa-voxceleb`` lays it out (its
``hyperparams.yaml`` with smaller sizes, the pretrainer's paths naming the hub id), with a
small random ECAPA-TDNN, and loaded offline.
"""

import pathlib

import numpy as np
import pytest
import soundfile
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.speaker import EncoderClassifier, SpeakerRecognition

from speechbrain_w2vbert_sv.cli import main as cli_main
from speechbrain_w2vbert_sv.data.audio import load_audio
from speechbrain_w2vbert_sv.inference.interface import SpeechBrainSpeakerRecognition, load_model
from speechbrain_w2vbert_sv.scoring.trials import read_scores
from tests.unittests.test_user_errors import cli_error

# The hub's hyperparams.yaml of speechbrain/spkrec-ecapa-voxceleb, sizes made small.
HUB_YAML = """\
# ############################################################################
# Model: ECAPA big for Speaker verification
# ############################################################################

# Feature parameters
n_mels: 80

# Pretrain folder (HuggingFace)
pretrained_path: speechbrain/spkrec-ecapa-voxceleb

# Output parameters
out_n_neurons: 5

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [32, 32, 32, 32, 96]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 8
    lin_neurons: 16

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 16
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""
FILES = [
    "classifier.ckpt",
    "embedding_model.ckpt",
    "hyperparams.yaml",
    "label_encoder.txt",
    "mean_var_norm_emb.ckpt",
]
ASC = "arabic_speech_commands"


def write_speechbrain_folder(folder):
    """The files of a SpeechBrain pretrained speaker folder, from random weights."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True)
    (folder / "hyperparams.yaml").write_text(HUB_YAML)
    torch.manual_seed(0)
    hparams = load_hyperpyyaml(HUB_YAML)
    model = hparams["embedding_model"]
    with torch.no_grad():  # batch-norm statistics that matter
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_()
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    torch.save(hparams["classifier"].state_dict(), folder / "classifier.ckpt")
    norm = hparams["mean_var_norm_emb"].train()
    norm(torch.randn(8, 1, 16) + 3.0, torch.ones(8))  # global statistics to save
    norm._save(folder / "mean_var_norm_emb.ckpt")
    labels = CategoricalEncoder()
    labels.update_from_iterable([f"id1000{i}" for i in range(5)])
    labels.save(folder / "label_encoder.txt")
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_speechbrain_folder(tmp_path_factory.mktemp("sb") / "spkrec-ecapa-voxceleb")


@pytest.fixture(scope="module")
def stock(folder, tmp_path_factory):
    """SpeechBrain's own SpeakerRecognition (an EncoderClassifier) on the folder."""
    return SpeakerRecognition.from_hparams(
        source=str(folder),
        savedir=str(tmp_path_factory.mktemp("savedir")),
        overrides={"pretrained_path": str(folder)},
    )


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(3, 12000, generator=gen), torch.tensor([1.0, 0.55, 0.8])


def test_embeddings_match_speechbrain_encoder_classifier(folder, stock, tmp_path):
    model = load_model(folder)
    assert isinstance(model, SpeechBrainSpeakerRecognition)
    assert sorted(p.name for p in folder.iterdir()) == FILES  # read, nothing written
    assert model.hparams.sample_rate == 16000 and model.hparams.threshold == 0.25
    classifier = EncoderClassifier.from_hparams(
        source=str(folder), savedir=str(tmp_path), overrides={"pretrained_path": str(folder)}
    )
    wavs, lens = _batch()
    for reference in (classifier, stock):
        for args in ((wavs, lens), (wavs, None), (wavs[0], None)):
            expected = reference.encode_batch(*args)
            got = model.encode_batch(*args)
            assert got.shape == expected.shape and got.shape[1:] == (1, 16)
            assert (got - expected).abs().max() < 1e-6
    # SpeechBrain applies mean_var_norm_emb only when asked; its statistics matter.
    normalized = model.encode_batch(wavs, lens, normalize=True)
    assert (normalized - stock.encode_batch(wavs, lens, normalize=True)).abs().max() < 1e-6
    assert (normalized - model.encode_batch(wavs, lens)).abs().max() > 0.1
    # Verification: SpeechBrain's cosine and default threshold.
    expected_score, expected_decision = stock.verify_batch(wavs, wavs.flip(0), lens, lens.flip(0))
    score, decision = model.verify_batch(wavs, wavs.flip(0), lens, lens.flip(0))
    assert torch.allclose(score, expected_score, atol=1e-6)
    assert torch.equal(decision, expected_decision)


def test_batched_extraction_matches_speechbrain(folder, stock, tmp_path):
    rng = np.random.default_rng(0)
    wavs = [0.1 * rng.standard_normal(int(16000 * s)).astype("float32") for s in (1.0, 0.9, 0.5)]
    paths = [tmp_path / f"{i}.wav" for i in range(len(wavs))]
    for path, wav in zip(paths, wavs):
        soundfile.write(path, wav, 16000, subtype="FLOAT")
    model = load_model(folder)
    single = torch.cat([model.encode_batch(torch.from_numpy(w))[:, 0] for w in wavs])
    one_each = model.encode_files(paths, max_batch_size=1, progress=False)
    assert (one_each - single).abs().max() < 1e-6
    # One padded batch: SpeechBrain's embeddings of that batch (its models see the
    # padding; only the statistics pooling masks it).
    padded = torch.zeros(len(wavs), len(wavs[0]))
    for row, wav in enumerate(wavs):
        padded[row, : len(wav)] = torch.from_numpy(wav)
    lens = torch.tensor([len(w) / len(wavs[0]) for w in wavs])
    expected = stock.encode_batch(padded, lens)[:, 0]
    batched = model.encode_files(paths, max_padding=1.0, progress=False)
    assert (batched - expected).abs().max() < 1e-6


def test_cli_embed_verify_score_on_real_speech(folder, shared_data, tmp_path, capsys):
    root = shared_data / ASC
    lines = (root / "trials" / "val_speakers_text_independent.txt").read_text().splitlines()
    trials = lines[:4] + lines[-4:]
    (tmp_path / "trials.txt").write_text("\n".join(trials) + "\n")
    clips = sorted({p for line in trials for p in line.split()[1:]})
    model = load_model(folder)
    expected = torch.cat([model.encode_batch(load_audio(root / c, 16000))[:, 0] for c in clips])

    # embed: every clip lasts 1.00 s, so batches hold no padding.
    output = str(tmp_path / "emb.pt")
    cli_main(
        [
            "embed",
            *clips,
            "--data_folder",
            str(root),
            "--model",
            str(folder),
            "--output",
            output,
            "--no_progress",
        ]
    )
    saved = torch.load(tmp_path / "emb.pt")
    assert saved["ids"] == clips
    assert (saved["embeddings"] - expected).abs().max() < 1e-5

    # verify: an 8 kHz FSDD clip against an ASC clip (resampled on reading).
    fsdd = sorted((shared_data / "fsdd" / "recordings").glob("*.flac"))[0]
    capsys.readouterr()
    cli_main(["verify", str(fsdd), str(root / clips[0]), "--model", str(folder)])
    out = capsys.readouterr().out
    score, _ = model.verify_files(fsdd, root / clips[0])
    assert out.startswith(f"score={float(score):.4f} threshold=0.2500 decision=")

    # score: the cosine scores of the embeddings above.
    cli_main(
        [
            "score",
            "--trials",
            str(tmp_path / "trials.txt"),
            "--data_folder",
            str(root),
            "--output_folder",
            str(tmp_path / "out"),
            "--model",
            str(folder),
            "--no_plots",
            "--no_progress",
        ]
    )
    read, scores = read_scores(tmp_path / "out" / "scores_cosine.txt")
    assert len(scores) == len(trials)
    rows = {c: i for i, c in enumerate(clips)}
    for (enroll, test), got in zip(zip(read.enroll_ids, read.test_ids), scores):
        a, b = expected[rows[enroll]], expected[rows[test]]
        assert abs(got - float(torch.nn.functional.cosine_similarity(a, b, dim=0))) < 1e-5


def test_unsupported_folders_are_one_line_errors(folder, tmp_path):
    wavs = [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]
    for path in wavs:
        soundfile.write(path, 0.1 * np.ones(16000), 16000)
    # Neither this package's export nor SpeechBrain's speaker layout.
    other = tmp_path / "other"
    other.mkdir()
    (other / "hyperparams.yaml").write_text("lr: 0.1\nmodules: {}\n")
    torch.save({}, other / "embedding_model.ckpt")
    with pytest.raises(ValueError, match="neither this package's export nor a SpeechBrain"):
        load_model(other)
    message = cli_error(["verify", *wavs, "--model", str(other)])
    assert "speechbrain/spkrec-ecapa-voxceleb" in message and "exported folder" in message
    # An empty folder names every supported kind.
    (tmp_path / "empty").mkdir()
    message = cli_error(["embed", *wavs, "--model", str(tmp_path / "empty"), "--output", "e.pt"])
    assert "not a model folder" in message and "SpeechBrain pretrained speaker folder" in message
    # A copy without one of the files its pretrainer loads.
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in FILES:
        if name != "classifier.ckpt":
            (partial / name).write_bytes((folder / name).read_bytes())
    message = cli_error(["verify", *wavs, "--model", str(partial)])
    assert message.endswith(
        f"{partial}: SpeechBrain speaker folder without classifier.ckpt (its "
        "hyperparams.yaml loads them; copy every file of the model)"
    )
    # ONNX export is for this package's models.
    message = cli_error(["onnx", "--model", str(folder), "--output", str(tmp_path / "m.onnx")])
    assert "ONNX export takes this package's models" in message
