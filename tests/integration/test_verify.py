"""recipes/VoxCeleb/verify.py end to end on real clips with a tiny exported model."""

import importlib.util
import json
import pathlib

import pytest
import torch
from speechbrain.utils.metric_stats import EER

from speechbrain_w2vbert_sv.inference.export import export_model
from speechbrain_w2vbert_sv.inference.interface import W2VBertSpeakerRecognition
from speechbrain_w2vbert_sv.scoring.metrics import compute_eer
from speechbrain_w2vbert_sv.scoring.trials import read_scores
from tests.unittests.test_inference import make_training_run

REPO = pathlib.Path(__file__).resolve().parents[2]
VERIFY_YAML = REPO / "recipes" / "VoxCeleb" / "hparams" / "verification.yaml"
ASC = "arabic_speech_commands"


def _verify_main():
    spec = importlib.util.spec_from_file_location(
        "verify", REPO / "recipes" / "VoxCeleb" / "verify.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory):
    """A training run, its export, and trial lists over real clips.

    The lists hold paths relative to the shared data root: a subsample of the ASC
    val-speaker list (16 kHz), plus trials with an 8 kHz FSDD clip.
    """
    root = tmp_path_factory.mktemp("verify")
    make_training_run(root / "run")
    exported = export_model(root / "run", root / "exported", check=False)
    lines = (
        (shared_data / ASC / "trials" / "val_speakers_text_independent.txt")
        .read_text()
        .splitlines()
    )
    lines = [f"{label} {ASC}/{a} {ASC}/{b}" for label, a, b in (line.split() for line in lines)]
    fsdd = sorted((shared_data / "fsdd" / "recordings").glob("*_jackson_*.flac"))[:2]
    fsdd = [f"fsdd/recordings/{p.name}" for p in fsdd]
    test = (
        lines[:14] + lines[-14:] + [f"1 {fsdd[0]} {fsdd[1]}", f"0 {fsdd[0]} {lines[0].split()[1]}"]
    )
    (root / "test.txt").write_text("\n".join(test) + "\n")
    (root / "calib.txt").write_text("\n".join(lines[100:130] + lines[-130:-100]) + "\n")
    cohort = (shared_data / ASC / "train.csv").read_text().splitlines()
    (root / "cohort.csv").write_text("\n".join(cohort[:1] + cohort[1:400:20]) + "\n")
    return root, exported


def test_verify_end_to_end(setup, shared_data):
    root, exported = setup
    output = root / "out"
    results = _verify_main()(
        [
            str(VERIFY_YAML),
            f"--model={exported}",
            f"--trials={root / 'test.txt'}",
            f"--data_folder={shared_data}",
            f"--output_folder={output}",
            f"--cohort_list={root / 'cohort.csv'}",
            f"--cohort_data_folder={shared_data / ASC}",
            "--cohort_top_n=10",
            f"--calibration_trials={root / 'calib.txt'}",
            "--name=ASC",
        ]
    )
    labels = [line.split()[0] for line in (root / "test.txt").read_text().splitlines()]
    n_target, n_nontarget = labels.count("1"), labels.count("0")
    assert list(results) == ["ASC cosine", "ASC asnorm", "ASC qmf"]
    for system, metrics in results.items():
        assert 0.0 <= metrics["eer"] <= 1.0
        assert (metrics["n_target"], metrics["n_nontarget"]) == (n_target, n_nontarget)
        # The EER is that of the scores written to disk; SpeechBrain's EER (no
        # interpolation) agrees within one target trial.
        trials, scores = read_scores(output / f"scores_{system.split()[-1]}.txt")
        assert metrics["eer"] == pytest.approx(compute_eer(scores, trials.labels), abs=1e-9)
        target = torch.from_numpy(scores[trials.labels == 1])
        nontarget = torch.from_numpy(scores[trials.labels == 0])
        assert abs(metrics["eer"] - EER(target, nontarget)[0]) <= 1.0 / n_target, system
    table = (output / "results.md").read_text()
    assert f"| ASC qmf | {n_target}/{n_nontarget} |" in table
    details = json.loads((output / "results.json").read_text())["systems"]
    assert set(details) == {"cosine", "asnorm", "qmf"} and "cllr" in details["qmf"]
    for name in ["det.png", "hist_cosine.png", "hist_asnorm.png", "hist_qmf.png"]:
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    # Cosine scores of the batched run = scores of each trial's two files on their own.
    trials, scores = read_scores(output / "scores_cosine.txt")
    assert trials.labels.tolist() == [int(label) for label in labels]
    model = W2VBertSpeakerRecognition.from_hparams(source=str(exported))
    for i in [0, 13, 20, 28, 29]:  # the last two involve the 8 kHz FSDD clips
        enroll, test = (
            trials.utterances[trials.enroll_index[i]],
            trials.utterances[trials.test_index[i]],
        )
        expected, _ = model.verify_files(shared_data / enroll, shared_data / test)
        assert abs(scores[i] - float(expected)) < 1e-4

    # A training output folder works as --model (LoRA merged on the fly).
    from_run = _verify_main()(
        [
            str(VERIFY_YAML),
            f"--model={root / 'run'}",
            f"--trials={root / 'test.txt'}",
            f"--data_folder={shared_data}",
            f"--output_folder={root / 'out_run'}",
            "--make_plots=False",
        ]
    )
    assert from_run["test.txt cosine"]["eer"] == pytest.approx(results["ASC cosine"]["eer"])
    _, run_scores = read_scores(root / "out_run" / "scores_cosine.txt")
    assert abs(run_scores - scores).max() < 1e-5


def test_bad_trial_lists_fail_before_embedding(setup, shared_data, monkeypatch, tmp_path):
    root, exported = setup

    def no_embedding(*args, **kwargs):
        raise AssertionError("embedding started before the files were checked")

    monkeypatch.setattr(W2VBertSpeakerRecognition, "encode_files", no_embedding)
    good = (root / "test.txt").read_text().splitlines()
    missing = tmp_path / "missing.txt"
    missing.write_text(
        "\n".join(good[:2] + [f"1 {ASC}/dataset/five/nobody.flac {good[0].split()[1]}"] + good[2:4])
        + "\n"
    )
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    missing.write_text(missing.read_text() + f"0 {good[0].split()[2]} {empty}\n")
    args = [
        str(VERIFY_YAML),
        f"--model={exported}",
        f"--data_folder={shared_data}",
        f"--output_folder={tmp_path / 'out'}",
    ]
    with pytest.raises(ValueError) as error:
        _verify_main()(args + [f"--trials={missing}"])
    message = str(error.value)
    assert "2 audio file(s) cannot be used" in message
    assert "line 3: arabic_speech_commands/dataset/five/nobody.flac: missing file" in message
    assert "line 6: " in message and "empty file" in message

    malformed = tmp_path / "malformed.txt"
    malformed.write_text(good[0] + "\n" + "1 only_one_path.wav\n")
    with pytest.raises(ValueError, match="line 2"):
        _verify_main()(args + [f"--trials={malformed}"])
    assert not list((tmp_path / "out").glob("scores_*"))
