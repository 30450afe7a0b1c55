"""Checkpoints from elsewhere are read without running code.

A checkpoint can carry a pickled object whose unpickling calls any function; here
one creates a marker file (an attack would run its own code instead). Every reader
of checkpoint files refuses such a file in one line naming it, and the marker is
never written: ``load_checkpoint_file`` and its users (an exported folder, a
training run, a SpeechBrain recipe run, the paper's and WeSpeaker's checkpoints),
``ConformerFbank.load_normalizer``, ``load_asr_checkpoint`` and the command line.
"""

import pathlib
import shutil

import numpy as np
import pytest
import soundfile
import torch
import yaml

from speechbrain_w2vbert_sv.lobes.asr_checkpoint import load_asr_checkpoint
from speechbrain_w2vbert_sv.lobes.asr_conformer import ConformerCTC
from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
from speechbrain_w2vbert_sv.utils import load_checkpoint_file
from tests.unittests.test_inference import make_training_run
from tests.unittests.test_speechbrain_slots import TINY_CONFORMER_SLOTS, speechbrain_run
from tests.unittests.test_user_errors import EXPORT, cli_error

REFUSAL = "holds objects other than tensors and plain containers (io.open)"


class Payload:
    """Creates ``marker`` when unpickled: ``open(marker, "w")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    """Where the payload would leave its mark; checked after the test."""
    path = tmp_path / "payload_ran"
    yield path
    assert not path.exists(), "a checkpoint's payload ran"


def write_payload(path, marker, legacy=False):
    """A state dict with a payload among its tensors (torch.save's zip or legacy format)."""
    state = {"weight": torch.ones(2), "extra": Payload(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def assert_refused(message, path):
    assert REFUSAL in message and str(path) in message and "\n" not in message, message


def test_the_payload_runs_when_unpickled(tmp_path):
    """The control: read as ``torch.load(weights_only=False)`` reads, it runs."""
    ran = tmp_path / "ran"
    file = write_payload(tmp_path / "x.ckpt", ran)
    torch.load(file, weights_only=False)
    assert ran.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_load_checkpoint_file(tmp_path, marker, legacy):
    file = write_payload(tmp_path / "model.ckpt", marker, legacy=legacy)
    with pytest.raises(ValueError) as error:
        load_checkpoint_file(file)
    assert_refused(str(error.value), file)


def test_load_normalizer(tmp_path, marker):
    file = write_payload(tmp_path / "normalizer.ckpt", marker)
    with pytest.raises(ValueError) as error:
        ConformerFbank(n_mels=40, norm_type="global").load_normalizer(file)
    assert_refused(str(error.value), file)


def tiny_asr():
    backbone = ConformerBackbone(
        n_mels=40, cnn_channels=(8, 8), d_model=32, nhead=4, num_layers=2, d_ffn=64, kernel_size=7
    )
    return ConformerCTC(ConformerFbank(n_mels=40, norm_type="global"), backbone, 7)


@pytest.mark.parametrize("carrier", ["model.ckpt", "asr.ckpt", "normalizer.ckpt"])
def test_load_asr_checkpoint(tmp_path, marker, carrier):
    """The model file of a recipe's or a pretrained folder, or the normaliser beside it."""
    model = tiny_asr()
    state = {f"0.{k}": v for k, v in model.backbone.CNN.state_dict().items()}
    state.update({f"1.{k}": v for k, v in model.backbone.Transformer.state_dict().items()})
    state.update({f"3.{k}": v for k, v in model.ctc_lin.state_dict().items()})
    model_file = "asr.ckpt" if carrier == "asr.ckpt" else "model.ckpt"
    torch.save(state, tmp_path / model_file)
    statistics = {"count": 3, "glob_mean": torch.zeros(40), "glob_std": torch.ones(40)}
    torch.save(statistics, tmp_path / "normalizer.ckpt")
    write_payload(tmp_path / carrier, marker)
    for checkpoint in (tmp_path, tmp_path / model_file):
        with pytest.raises(ValueError) as error:
            load_asr_checkpoint(checkpoint, model=tiny_asr())
        assert_refused(str(error.value), tmp_path / carrier)


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, 0.1 * np.random.default_rng(0).standard_normal(16000), 16000)
    return str(path)


def test_cli_embed_and_verify(tmp_path, marker, wav):
    folder = tmp_path / "model"
    shutil.copytree(EXPORT, folder)
    write_payload(folder / "embedding_model.ckpt", marker)
    for argv in (
        ["embed", wav, "--output", str(tmp_path / "e.pt")],
        ["verify", wav, wav],
    ):
        message = cli_error([*argv, "--model", str(folder)])
        assert_refused(message, folder / "embedding_model.ckpt")
    assert not (tmp_path / "e.pt").exists()


def test_cli_import(tmp_path, marker):
    wespeaker = tmp_path / "wespeaker"
    wespeaker.mkdir()
    settings = {"model": "W2VBert_Adapter_MFA", "dataset_args": {"frontend": "w2vbert"}}
    (wespeaker / "config.yaml").write_text(yaml.safe_dump(settings))
    write_payload(wespeaker / "avg_model.pt", marker)
    paper = write_payload(tmp_path / "paper.pth", marker)
    for fmt, checkpoint, carrier in (
        ("wespeaker", wespeaker, wespeaker / "avg_model.pt"),
        ("wespeaker", wespeaker / "avg_model.pt", wespeaker / "avg_model.pt"),
        ("paper", paper, paper),
    ):
        argv = ["import", "--format", fmt, "--checkpoint", str(checkpoint)]
        message = cli_error([*argv, "--output", str(tmp_path / "out")])
        assert_refused(message, carrier)
        assert not (tmp_path / "out").exists()


def checkpoint_folder(run):
    (folder,) = pathlib.Path(run, "save").glob("CKPT+*")
    return folder


def test_cli_export_of_a_training_run(tmp_path, marker):
    make_training_run(tmp_path / "run")
    weights = checkpoint_folder(tmp_path / "run") / "embedding_model.ckpt"
    write_payload(weights, marker)
    message = cli_error(["export", "--run", str(tmp_path / "run"), "--output", str(tmp_path / "o")])
    assert_refused(message, weights)


@pytest.mark.parametrize("carrier", ["embedding_model.ckpt", "normalizer.ckpt"])
def test_cli_export_of_a_speechbrain_run(tmp_path, marker, carrier):
    speechbrain_run(tmp_path / "run", TINY_CONFORMER_SLOTS, normalizer_stats=torch.randn(2, 9, 20))
    file = checkpoint_folder(tmp_path / "run") / carrier
    write_payload(file, marker)
    message = cli_error(["export", "--run", str(tmp_path / "run"), "--output", str(tmp_path / "o")])
    assert_refused(message, file)
