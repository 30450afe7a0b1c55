"""The split of a list among ranks, the ranks' threads, and resumable parts in one
process (the torchrun runs are in tests/integration/test_distributed_extraction.py)."""

import shutil

import numpy as np
import pytest
import soundfile
import torch

from speechbrain_w2vbert_sv.inference import distributed_extraction as extraction
from speechbrain_w2vbert_sv.inference.extraction import embed_files
from tests.tiny_models import small_w2vbert_model


def test_split_by_duration_is_balanced_deterministic_and_complete():
    gen = np.random.default_rng(0)
    for num_ranks in (1, 2, 3, 8):
        durations = gen.uniform(0.5, 20.0, size=101).tolist()
        dealt = extraction.balance_by_duration(durations, num_ranks)
        assert sorted(i for items in dealt for i in items) == list(range(101))
        totals = [sum(durations[i] for i in items) for items in dealt]
        # Longest first into the emptiest rank: within one item of each other.
        assert max(totals) - min(totals) <= max(durations)
        assert extraction.balance_by_duration(durations, num_ranks) == dealt
    # Parts are cut from the list alone, so any world size finds the same parts.
    assert extraction.part_ranges(7, 3) == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(ValueError, match="part_files"):
        extraction.part_ranges(7, 0)


def test_a_cpu_rank_gets_its_share_of_the_cores(monkeypatch):
    environ = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "2"}
    for name, value in dict(environ, MASTER_ADDR="127.0.0.1", MASTER_PORT="0").items():
        monkeypatch.setenv(name, value)
    threads = torch.get_num_threads()
    monkeypatch.setattr(extraction, "cpu_cores", lambda: 6)
    try:
        ranks = extraction.join_torchrun("cpu", environ)
        assert ranks == extraction.Rank(0, 1, "cpu")
        assert torch.distributed.get_backend() == "gloo"
        assert torch.get_num_threads() == 3  # 6 cores, 2 ranks on this node
    finally:
        torch.set_num_threads(threads)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class _Model:
    """What ``extract_list`` needs of a loaded model, counting the files it embeds."""

    def __init__(self):
        self.files = 0
        self.network = small_w2vbert_model().eval()
        self.mods = type("Mods", (), {"embedding_model": self.count})()
        self.hparams = type("Hparams", (), {"sample_rate": 16000})()
        self.precision, self.device = "fp32", "cpu"

    def count(self, wavs, wav_lens):
        self.files += len(wavs)
        return self.network(wavs, wav_lens)


def test_one_process_keeps_finished_parts_and_refuses_other_runs_parts(tmp_path):
    gen = np.random.default_rng(1)
    paths = []
    for i, seconds in enumerate([0.6, 0.3, 0.9, 0.4, 0.5, 0.7, 0.2]):
        paths.append(str(tmp_path / f"{i}.wav"))
        soundfile.write(paths[-1], 0.1 * gen.standard_normal(int(16000 * seconds)), 16000)
    ids = [f"{i}.wav" for i in range(len(paths))]
    model = _Model()
    output = tmp_path / "out.pt"
    folder = extraction.parts_folder(output)

    def killed_run(identity):  # what a killed run leaves: part 1 written, no other
        key = extraction._list_key(paths, 3, identity)
        assert extraction.finished_parts(folder, key) == []
        parts, durations = extraction.part_ranges(len(paths), 3), np.full(len(paths), 0.5)
        extraction.embed_parts(model.count, ids, paths, parts, [1], folder, durations)

    def extract(identity, load_model=lambda: model):
        return extraction.extract_list(
            ids, paths, output, "pt", load_model, identity=identity, part_files=3, progress=False
        )

    killed_run({"model": "m"})
    assert model.files == 3
    model.files = 0
    assert extract({"model": "m"}) == 16
    assert model.files == 4  # parts 0 and 2 only
    assert not folder.exists()
    table = torch.load(output, weights_only=True)
    assert table["ids"] == ids and table["paths"] == paths
    expected = embed_files(model.network, paths, progress=False)
    assert (table["embeddings"] - expected).abs().max() < 1e-5

    # Parts of another model are not mixed in.
    killed_run({"model": "m"})
    with pytest.raises(ValueError, match="holds the parts of another run"):
        extract({"model": "other"})
    shutil.rmtree(folder)

    # A run that fails before any part leaves no parts folder.
    def broken_model():
        raise ValueError("no model there")

    with pytest.raises(ValueError, match="no model there"):
        extract({"model": "m"}, broken_model)
    assert not folder.exists()
    with pytest.raises(ValueError, match="exists and is not an embedding store"):
        extraction.extract_list(ids, paths, tmp_path, "store", lambda: model, part_files=3)
