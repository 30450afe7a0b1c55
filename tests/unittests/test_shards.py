"""WebDataset shards: writing them from a prepared CSV (broken files skipped, samples
exact, even sizes, speakers mixed) and reading them for training (disjoint splits per
process and worker, the CSV path's label map, resume to the nearest shard)."""

import io
import json
import logging

import numpy as np
import pytest
import soundfile
import webdataset

from speechbrain_w2vbert_sv.data.csv_io import write_csv
from speechbrain_w2vbert_sv.data.pipeline import make_train_dataset
from speechbrain_w2vbert_sv.data.shard_pipeline import (
    ShardLoader,
    ShardTrainDataset,
    check_shard_split,
    find_shards,
    make_shard_train_loader,
    split_shards,
)
from speechbrain_w2vbert_sv.data.shards import read_manifest, write_shards
from speechbrain_w2vbert_sv.training.checkpoints import AtomicCheckpointer

SPEAKERS = ("00000001", "00000002", "00000005", "00000006")
SHARD_MB = 0.2  # about ten 1 s clips a shard


@pytest.fixture(scope="module")
def written(shared_data, tmp_path_factory):
    """Shards of 4 ASC speakers' clips (4 words each), plus a truncated and a missing file."""
    folder = tmp_path_factory.mktemp("shards")
    asc = shared_data / "arabic_speech_commands" / "dataset"
    rows = [
        {"ID": f"{word}--{path.stem}", "duration": 1.0, "wav": path, "spk_id": spk}
        for word in ("backward", "yes", "no", "left")
        for spk in SPEAKERS
        for path in sorted((asc / word).glob(f"{spk}_NO_*.flac"))
    ]
    truncated = folder / "truncated.flac"
    truncated.write_bytes(rows[0]["wav"].read_bytes()[:300])
    broken = [
        {"ID": "broken--truncated", "duration": 1.0, "wav": truncated, "spk_id": SPEAKERS[0]},
        {
            "ID": "broken--missing",
            "duration": 1.0,
            "wav": folder / "no.flac",
            "spk_id": SPEAKERS[1],
        },
    ]
    write_csv(folder / "train.csv", rows[:7] + broken + rows[7:])
    manifest = write_shards(
        folder / "train.csv", folder / "out", shard_size_mb=SHARD_MB, num_workers=2
    )
    return folder, rows, read_manifest(manifest)


def _samples(folder):
    """(shard name, sample) of every sample of every shard, in order."""
    for tar in sorted((folder / "out").glob("train-*.tar")):
        for sample in webdataset.tarfile_to_samples()([{"url": str(tar)}]):
            yield tar.name, sample


def test_broken_files_are_reported_and_skipped(written):
    folder, rows, manifest = written
    skipped = (folder / "out" / "skipped.txt").read_text()
    assert "truncated.flac" in skipped and "no.flac\tmissing file" in skipped
    assert manifest["skipped"] == 2
    assert manifest["num_samples"] == len(rows)
    assert manifest["speakers"] == sorted(SPEAKERS)


def test_every_sample_decodes_to_its_source_exactly(written):
    folder, rows, manifest = written
    by_id = {row["ID"]: row for row in rows}
    seen = []
    for name, sample in _samples(folder):
        meta = json.loads(sample["json"])
        source = by_id[meta["id"]]
        expected, rate = soundfile.read(source["wav"], dtype="int16")
        stored, stored_rate = soundfile.read(io.BytesIO(sample["flac"]), dtype="int16")
        assert stored_rate == rate and np.array_equal(stored, expected), meta["id"]
        assert meta["spk_id"] == source["spk_id"] and meta["wav"] == str(source["wav"])
        assert meta["duration"] == pytest.approx(len(expected) / rate)
        assert sample["__key__"] == meta["id"]
        seen.append((name, meta["id"]))
    assert sorted(i for _, i in seen) == sorted(by_id)
    # Shuffled before writing: not the CSV's order, and speakers mixed in a shard.
    assert [i for _, i in seen] != [r["ID"] for r in rows]
    first = {by_id[i]["spk_id"] for n, i in seen if n == manifest["shards"][0]["name"]}
    assert len(first) > 1
    # The manifest counts what the shards hold.
    for shard in manifest["shards"]:
        assert shard["samples"] == sum(n == shard["name"] for n, _ in seen)
        assert shard["bytes"] == (folder / "out" / shard["name"]).stat().st_size


def test_shards_have_even_sizes(written):
    _, _, manifest = written
    sizes = [s["bytes"] for s in manifest["shards"]]
    assert len(sizes) >= 4
    largest_sample = max(s["bytes"] / s["samples"] for s in manifest["shards"]) * 2
    for size in sizes[:-1]:  # closed once they reach the size; the last one holds the rest
        assert SHARD_MB * 1e6 <= size < SHARD_MB * 1e6 + largest_sample
    assert sizes[-1] < SHARD_MB * 1e6 + largest_sample


def test_label_map_is_the_csv_paths(written, tmp_path):
    folder, _, _ = written
    _, csv_encoder, csv_classes = make_train_dataset(folder / "train.csv", crop_seconds=0.5)
    pattern = str(folder / "out" / "train-{000000..000004}.tar")
    loader, encoder, classes = make_shard_train_loader(
        pattern, crop_seconds=0.5, label_encoder_file=tmp_path / "labels.txt"
    )
    assert encoder.lab2ind == csv_encoder.lab2ind and classes == csv_classes == 12
    batch = next(iter(loader))
    assert batch.sig.data.shape == (1, 8000)
    speaker = encoder.encode_label(batch.spk_id[0])
    assert batch.spk_label.data.item() % len(encoder) == speaker


def test_shards_are_checked_against_the_manifest(written, tmp_path):
    folder, _, manifest = written
    last = len(manifest["shards"]) - 1
    with pytest.raises(ValueError, match="not in its manifest"):
        find_shards(str(folder / "out" / f"train-{{000000..{last + 1:06d}}}.tar"))
    (tmp_path / "train-manifest.json").write_text(json.dumps(manifest))
    shard = (folder / "out" / "train-000000.tar").read_bytes()
    (tmp_path / "train-000000.tar").write_bytes(shard)
    with pytest.raises(ValueError, match="train-000001.tar: missing shard"):
        find_shards(str(tmp_path / "train-{000000..000001}.tar"))
    (tmp_path / "train-000000.tar").write_bytes(shard[:1024])
    with pytest.raises(ValueError, match="1024 bytes, its manifest says"):
        find_shards(str(tmp_path / "train-000000.tar"))


@pytest.mark.parametrize("world_size,num_workers", [(2, 1), (2, 3), (3, 2)])
def test_split_is_disjoint_and_covers_every_shard(world_size, num_workers):
    shards = list(range(13))
    parts = [
        split_shards(shards, rank, world_size, worker, num_workers)
        for rank in range(world_size)
        for worker in range(num_workers)
    ]
    assert sorted(s for part in parts for s in part) == shards
    assert all(parts)


def test_split_refuses_too_few_shards_and_warns_when_uneven(caplog):
    with pytest.raises(ValueError, match="3 shards cannot feed 2 processes x 2"):
        check_shard_split([10, 10, 10], 2, 2)
    with caplog.at_level(logging.WARNING):
        assert check_shard_split([10] * 5, 2, 2) == [20, 10, 10, 10]
    assert "divide unevenly" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_shard_split([10] * 8, 2, 2)
    assert "unevenly" not in caplog.text


def _dataset(written, rank=0, world_size=2, num_workers=0, batch_size=2, shuffle_buffer=4):
    folder, _, _ = written
    shards, manifest = find_shards(sorted(str(p) for p in (folder / "out").glob("train-*.tar")))
    _, encoder, _ = make_train_dataset(folder / "train.csv", crop_seconds=0.25)
    return ShardTrainDataset(
        shards,
        encoder,
        crop_seconds=0.25,
        batch_size=batch_size,
        num_workers=num_workers,
        shuffle_buffer=shuffle_buffer,
        rank=rank,
        world_size=world_size,
    )


def test_two_ranks_read_disjoint_shards_in_step(written):
    """Each epoch both processes yield the same number of items, from different shards."""
    for epoch in (1, 2):
        ids = []
        for rank in (0, 1):
            data = _dataset(written, rank)
            data.set_epoch(epoch)
            items = list(data)
            assert len(items) == len(data)
            assert all(item["sig"].shape == (4000,) for item in items)
            ids.append({item["id"] for item in items})
        assert not ids[0] & ids[1]
        # Both halves of the corpus, less at most a batch per rank cut to stay in step.
        assert len(ids[0] | ids[1]) >= len(written[1]) - 2 * 2 * 2


def _killed_and_resumed(written, tmp_path, num_workers, shuffle_buffer):
    """Batch IDs of epoch 1 whole, then cut after half of it (a checkpoint) and resumed
    by a new loader from that checkpoint; and the saved position."""
    from speechbrain.utils.epoch_loop import EpochCounter

    def loader_and_checkpointer(folder):
        counter = EpochCounter(3)
        data = _dataset(written, 0, 1, num_workers, shuffle_buffer=shuffle_buffer)
        loader = ShardLoader(data, counter, batch_size=2, num_workers=num_workers)
        objects = {"shard_position": loader, "counter": counter}
        return loader, counter, AtomicCheckpointer(folder, objects)

    loader, counter, _ = loader_and_checkpointer(tmp_path / "whole")
    next(counter)  # epoch 1, as the training loop does
    whole = [i for batch in loader for i in batch.id]
    assert len(whole) == len(loader) * 2

    loader, counter, checkpointer = loader_and_checkpointer(tmp_path / "killed")
    next(counter)
    done = len(loader) // 2 + 1
    for step, _ in enumerate(loader, 1):
        if step == done:
            checkpointer.save_checkpoint(end_of_epoch=False)
            break
    (ckpt,) = checkpointer.list_checkpoints()
    saved = json.loads((ckpt.path / "shard_position.ckpt").read_text())
    assert saved["epoch"] == 1 and saved["batches"] == done

    resumed, counter, checkpointer = loader_and_checkpointer(tmp_path / "killed")
    checkpointer.recover_if_possible()
    assert next(counter) == 1  # the epoch is done again, from where it was
    ids = [i for batch in resumed for i in batch.id]
    assert len(ids) == (len(resumed) - done) * 2  # the steps of an uninterrupted epoch
    assert next(counter) == 2 and len(list(resumed)) == len(resumed)  # then whole epochs
    return whole, ids, saved


def test_loader_resumes_after_the_shards_already_read(written, tmp_path):
    """In shard order (no buffer), the resumed epoch is the uninterrupted one from the
    first shard not read to the end."""
    whole, resumed, saved = _killed_and_resumed(written, tmp_path, 0, 0)
    (read,) = saved["shards_read"].values()
    counts = {s["name"]: s["samples"] for s in written[2]["shards"]}
    skipped = sum(counts[path.rsplit("/", 1)[-1]] for path in read)
    assert 0 < skipped <= saved["batches"] * 2
    assert resumed == whole[skipped : skipped + len(resumed)]


def test_loader_resumes_with_workers_and_buffers(written, tmp_path):
    whole, resumed, saved = _killed_and_resumed(written, tmp_path, 2, 4)
    assert set(saved["shards_read"]) == {"rank0-worker0", "rank0-worker1"}
    assert set(resumed) <= set(whole)
