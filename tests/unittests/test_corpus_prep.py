"""VoxBlink2 and CN-Celeb preparation on tiny fake trees in their published layouts, the
combined VoxCeleb + VoxBlink2 training set, and CNC-Eval multi-utterance enrollment
through the scoring path of Vox1-O/E/H."""

import json
import types

import numpy as np
import pytest
import soundfile
import torch

from speechbrain_w2vbert_sv import scoring
from speechbrain_w2vbert_sv.data.cnceleb import prepare_cnceleb
from speechbrain_w2vbert_sv.data.csv_io import path_to_id, read_csv
from speechbrain_w2vbert_sv.data.pipeline import make_train_dataset
from speechbrain_w2vbert_sv.data.recipe_data import prepare_recipe_data
from speechbrain_w2vbert_sv.data.voxblink2 import prepare_voxblink2
from speechbrain_w2vbert_sv.inference.verification import verify_trial_list
from speechbrain_w2vbert_sv.training.speaker_brain import SpeakerBrain


def _write(path, seconds=0.1, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    soundfile.write(path, 0.1 * rng.standard_normal(int(16000 * seconds)), 16000)
    return path


def _truncate(path):
    """A file cut inside its header: unreadable."""
    path.write_bytes(path.read_bytes()[:30])
    return path


def _skipped(save):
    lines = (save / "skipped.txt").read_text().splitlines()[1:]
    return dict(line.split("\t") for line in lines)


@pytest.fixture
def fake_voxblink2(tmp_path):
    """``<spk>/<video>/<utt>.wav`` as VoxBlink2's cropper writes it, 6-digit speakers;
    one truncated file and one file outside the layout."""
    root = tmp_path / "voxblink2"
    for s, spk in enumerate(("id000000", "id000001", "id000002")):
        for video in ("DwgYRqnQZHM", "x6uYqmx31kE"):
            for utt in range(2):
                _write(root / spk / video / f"{utt:05d}.wav", seed=s * 10 + utt)
    broken = _truncate(root / "id000002/x6uYqmx31kE/00001.wav")
    stray = _write(root / "audio" / "stray.wav")
    return {"root": root, "broken": broken, "stray": stray}


def test_voxblink2_layout_counts_and_skipped(fake_voxblink2, tmp_path):
    save = tmp_path / "save"
    csvs = prepare_voxblink2(fake_voxblink2["root"], save, dev_ratio=0.25)
    rows = read_csv(csvs["train"]) + read_csv(csvs["dev"])
    assert len(rows) == 11  # 12 files, one unusable; the stray file has no speaker
    counts = {}
    for row in rows:
        counts[row["spk_id"]] = counts.get(row["spk_id"], 0) + 1
    assert counts == {"id000000": 4, "id000001": 4, "id000002": 3}
    assert "id000001--DwgYRqnQZHM--00001" in {r["ID"] for r in rows}
    assert list(rows[0]) == ["ID", "duration", "wav", "spk_id", "sample_rate", "channels"]
    skipped = _skipped(save)
    assert "unreadable" in skipped[str(fake_voxblink2["broken"])]
    assert "no speaker ID" in skipped[str(fake_voxblink2["stray"])]


def test_voxceleb_voxblink2_one_training_set_with_disjoint_labels(fake_voxblink2, tmp_path):
    vox = tmp_path / "vox"
    for spk in ("id00012", "id00015", "id10270", "id10300"):  # id1xxxx: test speakers
        for utt in range(2):
            _write(vox / "wav" / spk / "vidA" / f"{utt + 1:05d}.wav", seed=utt)
    trials_folder = tmp_path / "meta"
    trials_folder.mkdir()
    (trials_folder / "veri_test2.txt").write_text(
        "1 id10270/vidA/00001.wav id10270/vidA/00002.wav\n"
        "0 id10270/vidA/00001.wav id10300/vidA/00001.wav\n"
    )
    hparams = {
        "data_format": "voxceleb_voxblink2",
        "save_folder": tmp_path / "run",
        "data_folder": [vox],
        "voxblink2_folder": fake_voxblink2["root"],
        "trials_folder": trials_folder,
        "trials": ["O"],
        "dev_ratio": 0.25,
        "sample_rate": 16000,
        "prep_workers": 0,
        "prep_read_samples": True,
    }
    data = prepare_recipe_data(hparams)
    train = read_csv(data["train"])
    speakers = {r["spk_id"] for r in train}
    assert speakers == {
        "voxceleb--id00012", "voxceleb--id00015",
        "voxblink2--id000000", "voxblink2--id000001", "voxblink2--id000002",
    }  # fmt: skip
    assert {r["spk_id"] for r in read_csv(data["dev"])} <= speakers
    assert len({r["ID"] for r in train}) == len(train)
    assert {r["ID"] for r in read_csv(data["test"])} == {
        "id10270--vidA--00001", "id10300--vidA--00001", "id10270--vidA--00002"
    }  # fmt: skip
    counts = json.loads((tmp_path / "run/data/combined_corpora.json").read_text())
    assert {k: v["speakers"] for k, v in counts["train"].items()} == {
        "voxceleb": 2, "voxblink2": 3
    }  # fmt: skip
    # The classifier size comes from the data: speakers x speed factors.
    _, _, num_classes = make_train_dataset(
        data["train"], label_encoder_file=tmp_path / "labels.txt"
    )
    assert num_classes == 3 * len(speakers)
    # A second call finds everything prepared: the combined CSV is not rewritten.
    mtime = data["train"].stat().st_mtime_ns
    assert prepare_recipe_data(hparams)["train"].stat().st_mtime_ns == mtime


@pytest.fixture
def fake_cnceleb(tmp_path):
    """CN-Celeb_flac (dev list, eval enroll/test, lists naming .wav files) and
    CN-Celeb2_flac, with one truncated training file."""
    cn1, cn2 = tmp_path / "CN-Celeb_flac", tmp_path / "CN-Celeb2_flac"
    for s, spk in enumerate(("id00000", "id00001", "id00800", "id00801")):
        for utt in ("speech-01-001", "interview-02-002"):
            _write(cn1 / "data" / spk / f"{utt}.flac", seed=s)
    broken = _truncate(cn1 / "data/id00001/speech-01-001.flac")
    (cn1 / "dev").mkdir()
    (cn1 / "dev/dev.lst").write_text("id00000\nid00001\n")
    tests = ["id00800-singing-01-004", "id00801-vlog-01-003", "id00800-drama-01-005"]
    for t, name in enumerate(tests):
        _write(cn1 / "eval/test" / f"{name}.flac", seed=20 + t)
    lists = cn1 / "eval/lists"
    lists.mkdir(parents=True)
    enroll, test = [], []
    for spk in ("id00800", "id00801"):
        _write(cn1 / "eval/enroll" / f"{spk}-enroll.flac", seed=30)
        enroll.append(f"{spk}-enroll {spk}/speech-01-001.wav {spk}/interview-02-002.wav")
        test.append(f"{spk}-enroll enroll/{spk}-enroll.wav")
    (lists / "enroll.map").write_text("\n".join(enroll) + "\n")
    (lists / "enroll.lst").write_text("\n".join(test) + "\n")
    (lists / "trials.lst").write_text(
        "id00800-enroll test/id00800-singing-01-004.wav 1\n"
        "id00800-enroll test/id00801-vlog-01-003.wav 0\n"
        "id00801-enroll test/id00801-vlog-01-003.wav 1\n"
        "id00801-enroll test/id00800-drama-01-005.wav 0\n"
    )
    for utt in range(3):
        _write(cn2 / "data/id10000" / f"vlog-01-{utt:03d}.flac", seed=40 + utt)
    (cn2 / "spk.lst").write_text("id10000\n")
    return {"cn1": cn1, "cn2": cn2, "broken": broken}


def test_cnceleb_training_csv_and_trial_lists(fake_cnceleb, tmp_path):
    save = tmp_path / "save"
    data = prepare_cnceleb(fake_cnceleb["cn1"], save, cnceleb2_folder=fake_cnceleb["cn2"])
    train = read_csv(data["train"])
    counts = {}
    for row in train:
        counts[row["spk_id"]] = counts.get(row["spk_id"], 0) + 1
    assert counts == {"id00000": 2, "id00001": 1, "id10000": 3}  # eval speakers left out
    assert "data--id10000--vlog-01-002" in {r["ID"] for r in train}
    assert "unreadable" in _skipped(save)[str(fake_cnceleb["broken"])]
    avg = data["trials"]["CNC-Eval-Avg.txt"].read_text().splitlines()
    assert avg[:2] == [
        "1 id00800-enroll eval/test/id00800-singing-01-004.flac",
        "0 id00800-enroll eval/test/id00801-vlog-01-003.flac",
    ]
    assert data["enrollment_maps"]["CNC-Eval-Avg.txt"].read_text().splitlines()[0] == (
        "id00800-enroll data/id00800/speech-01-001.flac data/id00800/interview-02-002.flac"
    )
    concat = data["trials"]["CNC-Eval-Concat.txt"].read_text().splitlines()
    assert concat[0] == "1 eval/enroll/id00800-enroll.flac eval/test/id00800-singing-01-004.flac"
    test = {r["ID"]: r["spk_id"] for r in read_csv(data["test"])}
    assert len(test) == 3 + 4 + 2  # test files, enroll.map utterances, concatenated files
    assert test["data--id00801--speech-01-001"] == "id00801"
    assert test["eval--test--id00800-drama-01-005"] == "id00800"
    assert test["eval--enroll--id00801-enroll"] == "id00801"


def test_cnceleb_recipe_format_reads_the_map(fake_cnceleb, tmp_path):
    hparams = {
        "data_format": "cnceleb",
        "save_folder": tmp_path / "run",
        "data_folder": [fake_cnceleb["cn1"]],
        "trials": ["CNC-Eval-Avg"],
        "dev_ratio": 0.0,
        "sample_rate": 16000,
        "prep_workers": 0,
        "prep_read_samples": False,
    }
    data = prepare_recipe_data(hparams)
    trials = scoring.read_trials(
        data["trials"]["CNC-Eval-Avg.txt"], data["enrollment_maps"]["CNC-Eval-Avg.txt"]
    )
    assert sorted(trials.enrollments) == ["id00800-enroll", "id00801-enroll"]
    assert {r["spk_id"] for r in read_csv(data["train"])} == {"id00000", "id00001"}
    with pytest.raises(ValueError, match="CNC-Eval-Avg"):
        prepare_recipe_data({**hparams, "trials": ["O"], "save_folder": tmp_path / "other"})


def _toy_table(files, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return {f: torch.as_tensor(rng.standard_normal(dim), dtype=torch.float32) for f in files}


def _direct_cosine(trials, table, mean):
    """Per trial: mean of the enrollment embeddings vs the test embedding, by hand."""
    scores = []
    for enroll, test in zip(trials.enroll_ids, trials.test_ids):
        members = trials.enrollments.get(enroll, (enroll,))
        e = np.mean([table[f].numpy() for f in members], axis=0) - mean
        t = table[test].numpy() - mean
        scores.append(e @ t / np.linalg.norm(e) / np.linalg.norm(t))
    return np.array(scores)


def test_multi_utterance_enrollment_scores_equal_direct_computation(fake_cnceleb, tmp_path):
    data = prepare_cnceleb(fake_cnceleb["cn1"], tmp_path / "save", splits=("test",))
    trials = scoring.read_trials(
        data["trials"]["CNC-Eval-Avg.txt"], data["enrollment_maps"]["CNC-Eval-Avg.txt"]
    )
    assert len(trials.files) == 3 + 4  # the models' utterances replace the model ids
    table = _toy_table(trials.files)
    mean = np.linspace(-0.5, 0.5, 8).astype(np.float32)
    scores = scoring.cosine_scores(trials, table, mean=torch.as_tensor(mean))
    np.testing.assert_allclose(scores.numpy(), _direct_cosine(trials, table, mean), atol=1e-6)

    # s-norm and QMF measures see the averaged model as one row, like a plain list
    # whose enroll embeddings were averaged beforehand.
    averaged = {u: scoring.trial_matrix(trials, table)[i] for i, u in enumerate(trials.utterances)}
    plain = scoring.Trials.from_lists(trials.labels, trials.enroll_ids, trials.test_ids)
    cohort = torch.randn(20, 8, generator=torch.Generator().manual_seed(1))
    centre = {"mean": torch.as_tensor(mean), "top_n": 5}
    snormed = scoring.adaptive_snorm(scores, trials, table, cohort, **centre)
    expected = scoring.adaptive_snorm(
        scoring.cosine_scores(plain, averaged, mean=centre["mean"]), plain, averaged, cohort,
        **centre,
    )  # fmt: skip
    torch.testing.assert_close(snormed, expected)
    norms = scoring.quality_measures(trials, table)["embedding_norm"]
    torch.testing.assert_close(norms, scoring.quality_measures(plain, averaged)["embedding_norm"])

    # Training validation: a model one of whose utterances has no embedding is dropped.
    lost = "data/id00801/speech-01-001.flac"
    brain = types.SimpleNamespace(
        embeddings={path_to_id(f): v for f, v in table.items() if f != lost}
    )
    metrics = SpeakerBrain.score_trials(brain, trials)
    assert metrics["target_trials"] + metrics["nontarget_trials"] == 2


class _TableModel:
    """A stand-in model: each file's embedding is looked up in a table."""

    def __init__(self, table):
        self.table = table

    def encode_files(self, paths, durations=None, progress=False, **kwargs):
        return torch.stack([self.table[p] for p in paths])


def test_verification_path_with_enrollment_map(fake_cnceleb, tmp_path):
    data = prepare_cnceleb(fake_cnceleb["cn1"], tmp_path / "save", splits=("test",))
    trials_file = data["trials"]["CNC-Eval-Avg.txt"]
    enroll_map = data["enrollment_maps"]["CNC-Eval-Avg.txt"]
    trials = scoring.read_trials(trials_file, enroll_map)
    root = fake_cnceleb["cn1"]
    table = _toy_table(trials.files, seed=3)
    model = _TableModel({str(root / f): v for f, v in table.items()})
    out = tmp_path / "out"
    verify_trial_list(
        model, trials_file, root, out, enrollment_map=enroll_map, make_plots=False, progress=False
    )
    written, scores = scoring.read_scores(out / "scores_cosine.txt")
    assert written.enroll_ids == trials.enroll_ids
    np.testing.assert_allclose(scores, _direct_cosine(trials, table, 0.0), atol=1e-6)

    # An unusable enrollment utterance stops the run before any embedding, naming it.
    _truncate(root / "data/id00801/interview-02-002.flac")
    with pytest.raises(ValueError, match="line 3: data/id00801/interview-02-002.flac"):
        verify_trial_list(model, trials_file, root, out, enrollment_map=enroll_map)
