"""Corpus preparation: bad-file reports, kept files, skipping, real layouts, VoxCeleb."""

import gzip
import logging
import os

import numpy as np
import pytest
import soundfile

from speechbrain_w2vbert_sv.data import preparation
from speechbrain_w2vbert_sv.data.csv_io import path_to_id, read_csv
from speechbrain_w2vbert_sv.data.generic import (
    prepare_arabic_speech_commands,
    prepare_folder_corpus,
    prepare_fsdd,
)
from speechbrain_w2vbert_sv.data.pipeline import make_eval_dataset
from speechbrain_w2vbert_sv.data.voxceleb import (
    convert_to_wav,
    place_trial_lists,
    prepare_voxceleb,
    trial_list_speakers,
)
from speechbrain_w2vbert_sv.scoring.trials import read_trials


def _write(path, data, rate=16000, subtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, data, rate, subtype=subtype)
    return path


def _speech_like(seconds, rate=16000, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    data = 0.1 * rng.standard_normal((int(seconds * rate), channels))
    return data[:, 0] if channels == 1 else data


@pytest.fixture
def broken_corpus(tmp_path):
    """Two speakers with good files, plus one file for each problem and a file list."""
    root = tmp_path / "corpus"
    good = [_write(root / f"spk{s}" / f"u{u}.wav", _speech_like(0.5, seed=s * 10 + u))
            for s in (1, 2) for u in range(3)]  # fmt: skip
    kept = {
        "rate8k": _write(root / "spk1/rate8k.wav", _speech_like(0.5, rate=8000), rate=8000),
        "stereo": _write(root / "spk2/stereo.wav", _speech_like(0.5, channels=2)),
    }
    bad = {}
    bad["empty"] = root / "spk1/empty.wav"
    bad["empty"].write_bytes(b"")
    bad["truncated"] = root / "spk1/truncated.wav"
    bad["truncated"].write_bytes(good[0].read_bytes()[:30])
    nan = _speech_like(0.5).astype(np.float32)
    nan[100] = np.nan
    bad["nan"] = _write(root / "spk2/nan.wav", nan, subtype="FLOAT")
    bad["short"] = _write(root / "spk2/short.wav", _speech_like(0.01))  # < one frame pair
    bad["missing"] = root / "spk2/missing.wav"
    listed = [p.relative_to(root).as_posix() for p in good + list(kept.values())]
    listed += [p.relative_to(root).as_posix() for p in bad.values()]
    listed.append("spk1/empty.wav")  # listed twice: still checked and reported once
    file_list = tmp_path / "files.txt"
    file_list.write_text("\n".join(listed) + "\n")
    return {"root": root, "good": good, "kept": kept, "bad": bad, "list": file_list}


EXPECTED_REASON = {
    "empty": "empty file",
    "truncated": "unreadable",
    "nan": "NaN",
    "short": "too short",
    "missing": "missing file",
}


def test_bad_files_reported_once_and_excluded(broken_corpus, tmp_path, caplog):
    save = tmp_path / "save"
    with caplog.at_level(logging.WARNING):
        csvs = prepare_folder_corpus(
            broken_corpus["root"], save, r"^(spk\d)/", file_lists={"train": broken_corpus["list"]}
        )
    report = [line.split("\t") for line in (save / "skipped.txt").read_text().splitlines()[1:]]
    reported = {path: reason for path, reason in report}
    assert len(report) == len(reported) == len(broken_corpus["bad"])
    for name, path in broken_corpus["bad"].items():
        assert EXPECTED_REASON[name] in reported[str(path)], name
        warnings = [r for r in caplog.records if str(path) in r.getMessage()]
        assert len(warnings) == 1, name

    rows = {row["wav"]: row for row in read_csv(csvs["train"])}
    expected = {str(p) for p in broken_corpus["good"] + list(broken_corpus["kept"].values())}
    assert set(rows) == expected
    assert rows[str(broken_corpus["kept"]["rate8k"])]["sample_rate"] == "8000"
    assert rows[str(broken_corpus["kept"]["stereo"])]["channels"] == "2"
    assert rows[str(broken_corpus["good"][0])]["ID"] == "spk1--u0"
    assert {row["spk_id"] for row in rows.values()} == {"spk1", "spk2"}
    assert float(rows[str(broken_corpus["good"][0])]["duration"]) == pytest.approx(0.5)

    # Kept files load as 16 kHz mono.
    data = make_eval_dataset(csvs["train"])
    by_id = {data[i]["id"]: data[i]["sig"] for i in range(len(data))}
    assert by_id["spk1--rate8k"].shape == (8000,)
    assert by_id["spk2--stereo"].ndim == 1


def test_preparation_skipped_when_options_unchanged(broken_corpus, tmp_path, monkeypatch):
    save = tmp_path / "save"
    args = (broken_corpus["root"], save, r"^(spk\d)/")
    prepare_folder_corpus(*args, dev_ratio=0.34)
    before = (save / "train.csv").stat().st_mtime_ns

    def fail(*_, **__):
        raise AssertionError("files checked again although nothing changed")

    monkeypatch.setattr(preparation, "check_audio_files", fail)
    prepare_folder_corpus(*args, dev_ratio=0.34)
    assert (save / "train.csv").stat().st_mtime_ns == before
    monkeypatch.undo()

    csvs = prepare_folder_corpus(*args, dev_ratio=0.5)  # changed option: prepared again
    train, dev = read_csv(csvs["train"]), read_csv(csvs["dev"])
    assert {r["spk_id"] for r in dev} == {r["spk_id"] for r in train} == {"spk1", "spk2"}
    assert not {r["ID"] for r in dev} & {r["ID"] for r in train}
    # Without a file list the folder is walked: the missing file is simply not there.
    skipped = (save / "skipped.txt").read_text()
    assert "missing.wav" not in skipped and "empty.wav" in skipped


def test_arabic_speech_commands_layout(shared_data, tmp_path):
    data_folder = shared_data / "arabic_speech_commands"
    csvs = prepare_arabic_speech_commands(data_folder, tmp_path)
    train, test = read_csv(csvs["train"]), read_csv(csvs["test"])
    train_spk, test_spk = {r["spk_id"] for r in train}, {r["spk_id"] for r in test}
    assert (len(train_spk), len(test_spk), len(train_spk | test_spk)) == (18, 6, 24)
    assert len(train) == 18 * 160 and len(test) == 6 * 160
    assert {r["words"] for r in train} == {r["words"] for r in test}
    assert len({r["words"] for r in train}) == 40
    assert all(r["words"] in r["wav"] for r in train[:50])
    # The dataset's trial list addresses exactly the prepared test utterances.
    trial_ids = {path_to_id(f) for f in read_trials(
        data_folder / "trials/val_speakers_text_independent.txt").files}  # fmt: skip
    assert trial_ids <= {r["ID"] for r in test}
    assert (tmp_path / "skipped.txt").read_text().count("\n") == 1  # header only


def test_fsdd_layout(shared_data, tmp_path):
    data_folder = shared_data / "fsdd"
    csvs = prepare_fsdd(data_folder, tmp_path, read_samples=False)
    train, test = read_csv(csvs["train"]), read_csv(csvs["test"])
    assert {r["spk_id"] for r in train} == {r["spk_id"] for r in test}
    assert len({r["spk_id"] for r in train}) == 6
    assert len(train) + len(test) == 3000 and len(test) == 6 * 10 * 5
    assert {r["sample_rate"] for r in train} == {"8000"}
    row = next(r for r in test if r["ID"] == "recordings--7_george_3")
    assert (row["spk_id"], row["words"]) == ("george", "seven")
    trials = data_folder / "trials/test_part_balanced.txt"
    trial_ids = {path_to_id(f) for f in read_trials(trials).files}
    assert trial_ids <= {r["ID"] for r in test}


@pytest.fixture
def fake_voxceleb1(tmp_path):
    """VoxCeleb1 layout: id10270 is a Vox1-O test speaker, id10001/id10002 are not."""
    root = tmp_path / "vox1"
    for spk in ("id10001", "id10002", "id10270"):
        for video in ("vidA", "vidB"):
            for utt in (1, 2):
                _write(root / "wav" / spk / video / f"{utt:05d}.wav",
                       _speech_like(0.2, seed=utt), subtype="PCM_16")  # fmt: skip
    return root


def test_voxceleb_excludes_trial_speakers(fake_voxceleb1, tmp_path, shared_data):
    veri_test2 = shared_data / "voxceleb_trials" / "veri_test2.txt"
    csvs = prepare_voxceleb(
        fake_voxceleb1, tmp_path / "save", splits=("train", "dev"),
        verification_list=veri_test2, dev_ratio=0.25,
    )  # fmt: skip
    train, dev = read_csv(csvs["train"]), read_csv(csvs["dev"])
    assert {r["spk_id"] for r in train} == {r["spk_id"] for r in dev} == {"id10001", "id10002"}
    assert len(train) + len(dev) == 8
    assert "id10001--vidA--00001" in {r["ID"] for r in train + dev}
    assert "id10270" in trial_list_speakers(veri_test2)


def test_voxceleb_test_split_reports_missing_trial_files(fake_voxceleb1, tmp_path):
    trials = tmp_path / "trials.txt"
    trials.write_text(
        "1 id10270/vidA/00001.wav id10270/vidB/00002.wav\n"
        "0 id10270/vidA/00001.wav id10999/vidZ/00001.wav\n"
    )
    csvs = prepare_voxceleb(fake_voxceleb1, tmp_path / "save", verification_list=trials)
    test = read_csv(csvs["test"])
    assert [r["ID"] for r in test] == ["id10270--vidA--00001", "id10270--vidB--00002"]
    assert {r["spk_id"] for r in read_csv(csvs["train"]) + read_csv(csvs["dev"])} == {
        "id10001", "id10002"
    }  # fmt: skip
    skipped = (tmp_path / "save" / "skipped.txt").read_text()
    assert "id10999/vidZ/00001.wav\tmissing file" in skipped


def test_voxceleb2_m4a_needs_conversion(tmp_path):
    root = tmp_path / "vox2"
    m4a = root / "dev/aac/id00012/abc/00001.m4a"
    m4a.parent.mkdir(parents=True)
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    with pytest.raises(ValueError, match="ffmpeg.*convert_to_wav|convert_to_wav.*ffmpeg"):
        prepare_voxceleb(root, tmp_path / "save", splits=("train",))
    # Once converted next to the m4a, the wav is used and the m4a ignored.
    _write(m4a.with_suffix(".wav"), _speech_like(0.2))
    csvs = prepare_voxceleb(root, tmp_path / "save", splits=("train",))
    assert [r["ID"] for r in read_csv(csvs["train"])] == ["id00012--abc--00001"]
    with pytest.raises(RuntimeError, match="not found"):
        convert_to_wav(root, tmp_path / "wav", ffmpeg="surely-not-an-ffmpeg")


def test_place_trial_lists(shared_data, tmp_path):
    source = shared_data / "voxceleb_trials"
    placed = place_trial_lists(source, tmp_path, names=["O", "H"])
    assert set(placed) == {"veri_test2.txt", "list_test_hard.txt"}
    with open(placed["veri_test2.txt"]) as f:
        assert sum(1 for _ in f) == 37611
    with gzip.open(source / "list_test_hard.txt.gz", "rt") as f:
        first = f.readline()
    assert placed["list_test_hard.txt"].read_text().startswith(first)
    mtime = os.stat(placed["list_test_hard.txt"]).st_mtime_ns
    place_trial_lists(source, tmp_path, names=["H"])  # up to date: not rewritten
    assert os.stat(placed["list_test_hard.txt"]).st_mtime_ns == mtime
    with pytest.raises(ValueError, match="not found"):
        place_trial_lists(tmp_path / "nowhere", tmp_path, names=["E"])
