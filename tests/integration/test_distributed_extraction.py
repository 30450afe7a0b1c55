"""`w2vbert-sv embed` under torchrun (2 gloo processes) on real clips: the same embeddings
as one process, and a rerun after a rank died keeps the parts already written."""

import csv
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from speechbrain_w2vbert_sv.cli import main as cli_main
from speechbrain_w2vbert_sv.data.embedding_store import EmbeddingStore
from speechbrain_w2vbert_sv.inference.export import export_model
from tests.unittests.test_inference import make_training_run

REPO = pathlib.Path(__file__).resolve().parents[2]
ASC = "arabic_speech_commands"
PART_FILES = 3


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory):
    """A tiny exported model, and a list of 15 ASC clips plus a float copy of one clip."""
    root = tmp_path_factory.mktemp("distributed")
    make_training_run(root / "run")
    exported = export_model(root / "run", root / "exported", check=False)
    with open(shared_data / ASC / "train.csv", newline="") as f:
        files = [row["file"] for row in csv.DictReader(f)][::53][:15]
    data, rate = soundfile.read(shared_data / ASC / files[0], dtype="float32")
    # The last file of the list: the last part (1 file), the last of its rank's parts.
    files.append("damaged.wav")
    (root / "list.txt").write_text("\n".join(files) + "\n")
    os.symlink(shared_data / ASC / "dataset", root / "dataset")
    return root, exported, data, rate


def _embed(root, exported, output, processes=None, check=True, script=False):
    """``embed`` in this process, or under torchrun (``script``: the console script,
    where the package is installed)."""
    args = ["embed", "--model", str(exported), str(root / "list.txt"), "--data_folder", str(root)]
    args += ["--output", str(output), "--part_files", str(PART_FILES), "--no_progress"]
    if processes is None:
        return cli_main(args + ["--device", "cpu"])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
    console_script = pathlib.Path(sys.executable).parent / "w2vbert-sv"
    if script and console_script.exists():
        launch += ["--standalone", "--no-python", str(console_script)]
    else:
        launch += ["--standalone", "-m", "speechbrain_w2vbert_sv.cli"]
    done = subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _table(output):
    if output.suffix == ".npz":
        with np.load(output) as data:
            return list(data["ids"]), data["embeddings"]
    if output.suffix == ".pt":
        data = torch.load(output, weights_only=True)
        return data["ids"], data["embeddings"].numpy()
    store = EmbeddingStore.open(output)
    assert isinstance(store.embeddings, np.memmap)
    return store.ids, np.asarray(store.embeddings)


def test_two_processes_equal_one_and_resume_after_a_rank_died(setup):
    root, exported, data, rate = setup
    damaged = data.copy()
    damaged[len(damaged) // 2] = np.nan  # a valid header: it fails only when decoded
    soundfile.write(root / "damaged.wav", damaged, rate, subtype="FLOAT")

    # 1. Two ranks; the one holding the damaged file dies after its earlier parts.
    failed = _embed(root, exported, root / "two.npz", processes=2, check=False)
    assert failed.returncode != 0
    assert "damaged.wav: non-finite samples" in failed.stderr
    parts = root / "two.npz.parts"
    kept = sorted(p.name for p in parts.glob("part-*.pt"))
    assert 1 <= len(kept) < 6 and "part-000005.pt" not in kept
    assert not (root / "two.npz").exists()

    # The reference: one process, every output format.
    soundfile.write(root / "damaged.wav", data, rate, subtype="FLOAT")
    outputs = [root / "one.npz", root / "one.pt", root / "one_store"]
    for output in outputs:
        _embed(root, exported, output)
        assert not pathlib.Path(f"{output}.parts").exists()  # merged, then removed
    ids, reference = _table(outputs[0])
    assert ids == (root / "list.txt").read_text().split()
    for output in outputs[1:]:
        other_ids, other = _table(output)
        assert other_ids == ids and np.array_equal(other, reference)

    # 2. The rerun keeps the parts there: a kept part marked (x2) stays marked.
    marked = parts / kept[0]
    part = torch.load(marked, weights_only=True)
    torch.save({"ids": part["ids"], "embeddings": 2 * part["embeddings"]}, marked)
    rerun = _embed(root, exported, root / "two.npz", processes=2)
    assert f"{len(kept)} of 6 parts already done" in rerun.stderr
    assert not parts.exists()
    two_ids, two = _table(root / "two.npz")
    start = int(kept[0][5:11]) * PART_FILES
    rows = slice(start, start + PART_FILES)
    assert two_ids == ids
    np.testing.assert_allclose(two[rows], 2 * reference[rows], atol=1e-5)
    expected = reference.copy()
    expected[rows] *= 2
    assert np.abs(two - expected).max() < 1e-5  # the other parts equal one process's

    # 3. A fresh run of two ranks into a store equals one process.
    _embed(root, exported, root / "two_store", processes=2, script=True)
    store_ids, store = _table(root / "two_store")
    assert store_ids == ids and np.abs(store - reference).max() < 1e-5
