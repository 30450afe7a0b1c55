"""The package logs through SpeechBrain's ``get_logger``: under torchrun a warning is
written by rank 0 only, except the per-process ones (a file that fails on one rank)."""

import logging

import numpy as np
import pytest
import soundfile
import speechbrain.utils.distributed

from speechbrain_w2vbert_sv.data.csv_io import write_csv
from speechbrain_w2vbert_sv.data.pipeline import make_train_dataset
from speechbrain_w2vbert_sv.training import checkpoints


@pytest.fixture
def set_rank(monkeypatch):
    """Makes this process look like one rank of a distributed run (RANK is read first)."""
    monkeypatch.setattr(speechbrain.utils.distributed, "is_distributed_initialized", lambda: True)
    return lambda rank: monkeypatch.setenv("RANK", str(rank))


@pytest.mark.parametrize("rank, written", [(0, True), (1, False)])
def test_a_warning_is_written_on_rank_0_only(set_rank, caplog, rank, written):
    set_rank(rank)
    with caplog.at_level(logging.WARNING):
        checkpoints.logger.warning("Removing incomplete checkpoint %s", "x")
    assert ("Removing incomplete checkpoint x" in caplog.text) is written


def test_a_file_failing_on_another_rank_is_reported_there(set_rank, caplog, tmp_path):
    good, broken = tmp_path / "good.wav", tmp_path / "broken.wav"
    soundfile.write(good, np.zeros(16000, dtype=np.float32), 16000)
    broken.write_bytes(b"RIFF....")
    rows = [
        {"ID": name, "duration": 1.0, "wav": str(path), "spk_id": name}
        for name, path in (("good", good), ("broken", broken))
    ]
    write_csv(tmp_path / "train.csv", rows)
    data, _, _ = make_train_dataset(tmp_path / "train.csv", crop_seconds=0.1, speed_perturb=None)
    set_rank(1)
    with caplog.at_level(logging.WARNING):
        data[1]
    assert str(broken) in caplog.text
