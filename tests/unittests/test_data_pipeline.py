"""Training/eval datasets: crops, wrap padding, speed-perturbed classes, encoder, bad files."""

import logging
import random

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataloader import make_dataloader

from speechbrain_w2vbert_sv.data.csv_io import write_csv
from speechbrain_w2vbert_sv.data.pipeline import (
    crop_range,
    make_eval_dataset,
    make_train_dataset,
    random_batch_crop,
)

RATE = 16000


def _ramp(samples):
    """A slow ramp: its value tells the position, its slope tells the playback speed."""
    return np.linspace(-0.5, 0.5, samples).astype(np.float32)


@pytest.fixture
def ramp_csv(tmp_path):
    rows = []
    for spk, seconds in (("alice", 2.0), ("bob", 1.5), ("carol", 0.1)):
        path = tmp_path / f"{spk}.wav"
        soundfile.write(path, _ramp(int(seconds * RATE)), RATE, subtype="FLOAT")
        rows.append({"ID": spk, "duration": seconds, "wav": str(path), "spk_id": spk})
    write_csv(tmp_path / "train.csv", rows)
    return tmp_path / "train.csv"


def test_crop_is_a_segment_of_the_file(ramp_csv):
    random.seed(0)
    data, _, num_classes = make_train_dataset(ramp_csv, crop_seconds=0.5, speed_perturb=None)
    assert num_classes == 3
    full = _ramp(2 * RATE)
    starts = set()
    for _ in range(5):
        sig = data[0]["sig"].numpy()
        assert sig.shape == (8000,)
        start = int(np.abs(full - sig[0]).argmin())
        np.testing.assert_allclose(sig, full[start : start + 8000], atol=1e-6)
        starts.add(start)
    assert len(starts) > 1  # a new random position at each fetch


def test_crop_range_varies_the_batch_length(ramp_csv):
    """Items come at the longest crop; each batch is cut to one length in the range."""
    random.seed(2)
    data, _, _ = make_train_dataset(ramp_csv, crop_seconds=[0.25, 0.5], speed_perturb=None)
    batch = torch.stack([data[i]["sig"] for i in range(3)])
    assert batch.shape == (3, 8000)
    lengths = set()
    for _ in range(200):
        cut = random_batch_crop(batch, [0.25, 0.5], RATE)
        assert 4000 <= cut.shape[1] <= 8000 and torch.equal(cut, batch[:, : cut.shape[1]])
        lengths.add(cut.shape[1])
    assert min(lengths) < 4400 and max(lengths) > 7600  # the whole range is drawn
    assert random_batch_crop(batch, 0.5, RATE) is batch
    for bad in ([0.5, 0.25], [0.0, 1.0], [1.0], -1.0):
        with pytest.raises(ValueError, match="crop_seconds"):
            crop_range(bad)


def test_short_file_is_repeated(ramp_csv):
    data, _, _ = make_train_dataset(ramp_csv, crop_seconds=0.25, speed_perturb=None)
    sig = data[2]["sig"].numpy()  # carol: 0.1 s
    assert sig.shape == (4000,)
    np.testing.assert_allclose(sig[:1600], _ramp(1600))
    np.testing.assert_allclose(sig[1600:3200], _ramp(1600))
    np.testing.assert_allclose(sig[3200:], _ramp(1600)[:800])


def test_speed_perturbation_makes_new_classes(ramp_csv, tmp_path):
    random.seed(1)
    data, encoder, num_classes = make_train_dataset(
        ramp_csv, crop_seconds=0.2, speed_perturb=(0.9, 1.0, 1.1),
        label_encoder_file=tmp_path / "label_encoder.txt",
    )  # fmt: skip
    assert len(encoder) == 3 and num_classes == 9
    slope = 1.0 / (2 * RATE - 1)  # per sample, at speed 1.0, for alice
    blocks_seen = set()
    for _ in range(30):
        item = data[0]
        label = item["spk_label"].item()
        block, speaker = divmod(label, 3)
        assert speaker == encoder.encode_label("alice")
        # Least-squares slope: the resampler's tiny per-phase gain ripple averages out.
        sig = item["sig"].numpy()[50:-50]
        measured = np.polyfit(np.arange(sig.size), sig, 1)[0] / slope
        assert measured == pytest.approx({0: 1.0, 1: 0.9, 2: 1.1}[block], abs=0.01)
        blocks_seen.add(block)
    assert blocks_seen == {0, 1, 2}


def test_label_encoder_is_reloaded(ramp_csv, tmp_path):
    encoder_file = tmp_path / "label_encoder.txt"
    _, first, _ = make_train_dataset(ramp_csv, label_encoder_file=encoder_file)
    # Same speakers listed in another order: the saved mapping wins.
    rows = list(reversed(ramp_csv.read_text().splitlines()[1:]))
    reordered = tmp_path / "reordered.csv"
    reordered.write_text(ramp_csv.read_text().splitlines()[0] + "\n" + "\n".join(rows) + "\n")
    _, second, _ = make_train_dataset(reordered, label_encoder_file=encoder_file)
    assert second.lab2ind == first.lab2ind
    other = tmp_path / "other.csv"
    write_csv(other, [{"ID": "x", "duration": 1, "wav": "x.wav", "spk_id": "zed"}])
    with pytest.raises(ValueError, match="zed"):
        make_train_dataset(other, label_encoder_file=encoder_file)


def test_failing_file_is_replaced_and_logged_once(ramp_csv, tmp_path, caplog):
    rows = ramp_csv.read_text().splitlines()
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....")
    rows.append(f"dan,1.0,{broken},dan")
    csv_file = tmp_path / "with_broken.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    data, encoder, _ = make_train_dataset(csv_file, crop_seconds=0.1, speed_perturb=None)
    with caplog.at_level(logging.WARNING):
        items = [data[3] for _ in range(3)]
    assert all(item["sig"].shape == (1600,) for item in items)
    assert all(item["spk_id"] != "dan" for item in items)
    assert all(item["spk_label"].item() == encoder.encode_label(item["spk_id"]) for item in items)
    assert sum(str(broken) in record.getMessage() for record in caplog.records) == 1


def test_batches_through_speechbrain_loader(ramp_csv):
    data, _, _ = make_train_dataset(ramp_csv, crop_seconds=0.1)
    batch = next(iter(make_dataloader(data, batch_size=3)))
    assert isinstance(batch, PaddedBatch)
    assert batch.sig.data.shape == (3, 1600) and torch.all(batch.sig.lengths == 1)
    assert batch.spk_label.data.shape == (3, 1) and batch.spk_label.data.dtype == torch.long


def test_eval_dataset_whole_utterances(ramp_csv, tmp_path):
    from_csv = make_eval_dataset(ramp_csv)
    assert [from_csv[i]["sig"].shape[0] for i in range(3)] == [32000, 24000, 1600]
    soundfile.write(tmp_path / "low.flac", np.zeros(4000), 8000)
    from_list = make_eval_dataset(["low.flac", "alice.wav"], data_folder=tmp_path)
    assert [from_list[i]["id"] for i in range(2)] == ["low", "alice"]
    assert from_list[0]["sig"].shape == (8000,) and from_list[0]["duration"] == 0.5
