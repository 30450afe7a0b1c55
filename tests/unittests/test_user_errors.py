"""What a new user's common mistakes answer: one line naming the file and the problem.

Each case was a traceback (or a message without the file) before: a damaged
``embedding_model.ckpt``, a ``hyperparams.yaml`` that does not parse, ``--device
cuda:0`` where torch sees no GPU, a wav cut short after its header, and a stage yaml
run offline without the encoder in the cache. Every subcommand of ``w2vbert-sv``, read
from its parser, answers the same broken models and wrong output suffixes in one line.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import soundfile
import torch

from speechbrain_w2vbert_sv.cli import build_parser, main

REPO = pathlib.Path(__file__).resolve().parents[2]
EXPORT = REPO / "tests" / "data" / "legacy_exports" / "conformer_mfa"
# A sound model that every command takes (ONNX export included).
W2VBERT_EXPORT = EXPORT.parent / "w2vbert_mfa"


def cli_error(argv):
    """The message ``w2vbert-sv`` exits with (it must exit with one)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = exit_info.value.code
    assert isinstance(message, str), f"exit code {message!r} without a message"
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def wavs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a.wav", "b.wav"):
        soundfile.write(tmp_path / name, 0.1 * rng.standard_normal(16000), 16000)
        paths.append(str(tmp_path / name))
    return paths


@pytest.fixture
def export_copy(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(EXPORT, folder)
    return folder


def subcommands():
    """The subcommands of ``w2vbert-sv``, as its parser defines them."""
    (commands,) = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    return sorted(commands.choices)


def _weights(model):
    """The weights file of a model folder; an .onnx file itself."""
    return model if model.suffix == ".onnx" else model / "embedding_model.ckpt"


# Per subcommand: (the argvs giving a broken model to its model, run or checkpoint
# argument; the argv whose output file has a wrong suffix, None where the command writes
# no file of a fixed kind). A new subcommand fails the test below until it has its entry.
CASES = {
    "embed": (
        lambda model, f: [["embed", f.wav, "--model", model, "--output", f.tmp / "e.pt"]],
        lambda f: ["embed", f.wav, "--model", W2VBERT_EXPORT, "--output", f.tmp / "e.txt"],
    ),
    "verify": (lambda model, f: [["verify", f.wav, f.wav, "--model", model]], None),
    "score": (
        lambda model, f: [
            ["score", "--trials", f.trials, "--data_folder", f.tmp, "--output_folder"]
            + [f.tmp / "scores", "--model", model, "--no_plots"]
        ],
        None,
    ),
    "export": (
        lambda model, f: [
            ["export", "--run", model, "--output", f.tmp / "out"],
            ["export", "--format", "wespeaker", "--run", model, "--output", f.tmp / "out"],
        ],
        None,
    ),
    "import": (
        lambda model, f: [
            ["import", "--format", "paper", "--checkpoint", model, "--output", f.tmp / "out"],
            ["import", "--format", "paper", "--checkpoint", _weights(model)]
            + ["--output", f.tmp / "out"],
            ["import", "--format", "wespeaker", "--checkpoint", model, "--output", f.tmp / "out"],
            ["import", "--format", "wespeaker", "--checkpoint", _weights(model)]
            + ["--config", f.wespeaker_config, "--output", f.tmp / "out"],
        ],
        None,
    ),
    "onnx": (
        lambda model, f: [["onnx", "--model", model, "--output", f.tmp / "m.onnx"]],
        lambda f: ["onnx", "--model", W2VBERT_EXPORT, "--output", f.tmp / "m.txt"],
    ),
    "quantize": (
        lambda model, f: [["quantize", "--model", model, "--output", f.tmp / "out"]],
        None,
    ),
    # It writes a folder of RTTMs: no suffix to get wrong.
    "diarize": (
        lambda model, f: [["diarize", f.wav, "--model", model, "--output_folder", f.tmp / "rttm"]],
        None,
    ),
    # The broken models also stand for broken speaker stores (read by a sound model).
    "enroll": (
        lambda model, f: [
            ["enroll", "--model", model, "--store", f.tmp / "store", "--remove", "x"],
            ["enroll", "--model", W2VBERT_EXPORT, "--store", model, "--remove", "x"],
        ],
        None,
    ),
    "identify": (
        lambda model, f: [
            ["identify", f.wav, "--model", model, "--store", f.tmp / "store"],
            ["identify", f.wav, "--model", W2VBERT_EXPORT, "--store", model],
        ],
        None,
    ),
    # No model: the broken model files and folders stand for broken RTTMs and UEMs.
    "der": (
        lambda model, f: [
            ["der", "--reference", model, "--hypothesis", model],
            ["der", "--reference", f.rttm, "--hypothesis", model],
            ["der", "--reference", f.rttm, "--hypothesis", f.rttm, "--uem", model],
        ],
        None,
    ),
}
WRONG_SUFFIX = "wrong output suffix"
BROKEN_MODELS = ("missing folder", "no hyperparams.yaml", "truncated weights", "garbage .onnx")


@pytest.fixture
def broken(tmp_path, wavs):
    """The broken models by kind (``models``), and the other inputs of the commands."""
    no_hparams = tmp_path / "no_hparams"
    shutil.copytree(EXPORT, no_hparams)
    (no_hparams / "hyperparams.yaml").unlink()
    truncated = tmp_path / "truncated"
    shutil.copytree(EXPORT, truncated)
    weights = truncated / "embedding_model.ckpt"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an ONNX model")
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a.wav b.wav\n")
    rttm = tmp_path / "a.rttm"
    rttm.write_text("SPEAKER a 1 0.0 1.0 <NA> <NA> A <NA> <NA>\n")
    wespeaker_config = tmp_path / "wespeaker" / "config.yaml"
    wespeaker_config.parent.mkdir()
    wespeaker_config.write_text("model: W2VBert_Adapter_MFA\n")
    models = dict(zip(BROKEN_MODELS, (tmp_path / "missing", no_hparams, truncated, garbage)))
    return types.SimpleNamespace(
        models=models,
        tmp=tmp_path,
        wav=wavs[0],
        trials=trials,
        wespeaker_config=wespeaker_config,
        rttm=rttm,
    )


@pytest.mark.parametrize("kind", (*BROKEN_MODELS, WRONG_SUFFIX))
@pytest.mark.parametrize("command", subcommands())
def test_every_command_answers_broken_inputs_in_one_line(command, kind, broken, capsys):
    assert command in CASES, f"w2vbert-sv {command}: add its broken-input cases to CASES"
    model_argvs, wrong_suffix_argv = CASES[command]
    if kind == WRONG_SUFFIX:
        argvs = [] if wrong_suffix_argv is None else [wrong_suffix_argv(broken)]
    else:
        argvs = model_argvs(broken.models[kind], broken)
    for argv in argvs:
        argv = [str(arg) for arg in argv]
        message = cli_error(argv)
        assert message.startswith(f"w2vbert-sv {command}: error: ")
        assert "Traceback" not in capsys.readouterr().err
        if kind == WRONG_SUFFIX:
            assert "must end in" in message and not os.path.exists(argv[-1])


def test_the_folder_verifies_before_any_damage(export_copy, wavs, capsys):
    main(["verify", *wavs, "--model", str(export_copy), "--device", "cpu"])
    assert capsys.readouterr().out.startswith("score=")


def test_damaged_weights_file(export_copy, wavs):
    weights = export_copy / "embedding_model.ckpt"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    message = cli_error(["verify", *wavs, "--model", str(export_copy)])
    assert str(weights) in message and "not a readable PyTorch checkpoint" in message


def test_hyperparams_that_do_not_parse(export_copy, wavs):
    hparams = export_copy / "hyperparams.yaml"
    hparams.write_text(hparams.read_text() + "threshold: [0.3\n")
    message = cli_error(["verify", *wavs, "--model", str(export_copy)])
    assert str(hparams) in message and "not valid YAML" in message and "line" in message


def test_training_yaml_that_does_not_parse(tmp_path):
    """The export reads the run's yaml: the same one-line answer."""
    from speechbrain_w2vbert_sv.inference.model_yaml import model_settings

    bad = tmp_path / "hyperparams.yaml"
    bad.write_text("model:\n  d_model: 64\n bad indent: 1\n")
    with pytest.raises(ValueError, match=rf"{bad}: not valid YAML: .*\(line 3, column"):
        model_settings(bad)


def test_cuda_device_without_a_gpu(export_copy, wavs, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = cli_error(["verify", *wavs, "--model", str(export_copy), "--device", "cuda:0"])
    assert message.endswith(
        "--device cuda:0: torch sees no CUDA GPU on this machine "
        f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
        "use --device cpu"
    )


def test_truncated_wav_is_named(export_copy, wavs, tmp_path):
    cut = tmp_path / "cut.wav"
    soundfile.write(cut, 0.1 * np.ones(16000), 16000, subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[:54])  # header + 5 samples
    message = cli_error(["verify", wavs[0], str(cut), "--model", str(export_copy)])
    assert message.endswith(
        f"{cut}: truncated file: its header promises 16000 frames (1.00 s) but it holds 5"
    )


def test_stage_yaml_offline_without_the_encoder(tmp_path):
    """train.py exits with one line: what to download and that a folder is accepted."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "empty_hf_home"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "recipes" / "VoxCeleb" / "train.py"),
            str(REPO / "recipes" / "VoxCeleb" / "hparams" / "stage1.yaml"),
            f"--data_folder={tmp_path}",
            f"--trials_folder={tmp_path}",
            f"--output_folder={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: w2vbert_source='facebook/w2v-bert-2.0'")
    assert "hf download facebook/w2v-bert-2.0 --local-dir w2v-bert-2.0" in last
    assert "--w2vbert_source=w2v-bert-2.0 (w2vbert_source takes a local folder)" in last
