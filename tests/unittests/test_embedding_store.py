"""The folder store of embedding tables: round trip, memory mapping, atomic replacement
under simulated kills at each step, and one-line errors for folders that are not stores."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from speechbrain_w2vbert_sv.data import embedding_store
from speechbrain_w2vbert_sv.data.embedding_store import (
    EmbeddingStore,
    EmbeddingStoreError,
    EmbeddingStoreWriter,
    write_store,
)


def _table(count, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return [f"spk {i}/utt-{i}.wav" for i in range(count)], rng.standard_normal((count, dim))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_is_memory_mapped(tmp_path, dtype):
    ids, table = _table(50)
    write_store(tmp_path / "s", ids, table, meta={"model": "m", "n": 3}, dtype=dtype)
    store = EmbeddingStore.open(tmp_path / "s")
    assert isinstance(store.embeddings, np.memmap)
    assert store.ids == ids and len(store) == 50 and store.meta == {"model": "m", "n": 3}
    assert store.embeddings.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(store.embeddings, table.astype(dtype))
    picked = store.get([ids[7], ids[3]])
    assert picked.dtype == np.float32
    np.testing.assert_array_equal(picked, table[[7, 3]].astype(dtype).astype(np.float32))
    np.testing.assert_array_equal(store.index(ids[::-1]), np.arange(50)[::-1])
    assert store.index(ids[4]) == 4
    # The same arrays loaded without mapping; NumPy's own reader agrees.
    in_memory = EmbeddingStore.open(tmp_path / "s", mmap=False)
    assert not isinstance(in_memory.embeddings, np.memmap)
    np.testing.assert_array_equal(np.load(tmp_path / "s" / "embeddings.npy"), in_memory.embeddings)


def test_writer_fills_blocks_in_any_order_with_columns(tmp_path):
    ids, table = _table(10)
    with EmbeddingStoreWriter(tmp_path / "s", 10, 8, columns={"count": "int64"}) as writer:
        for start in (6, 0, 3):
            stop = {6: 10, 0: 3, 3: 6}[start]
            writer.write(start, ids[start:stop], table[start:stop], {"count": range(start, stop)})
    store = EmbeddingStore.open(tmp_path / "s")
    np.testing.assert_allclose(store.embeddings, table.astype(np.float32))
    np.testing.assert_array_equal(store.columns["count"], np.arange(10))


def test_replacement_keeps_previous_store_on_failure_inside_writer(tmp_path):
    folder = tmp_path / "s"
    write_store(folder, *_table(5))
    with pytest.raises(RuntimeError):
        with EmbeddingStoreWriter(folder, 6, 8) as writer:
            writer.write(0, *_table(3, seed=1))
            raise RuntimeError("killed mid-write")
    assert EmbeddingStore.open(folder).ids == _table(5)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def _kill_at(monkeypatch, name, call):
    """Makes the ``call``-th call of ``os.rename``/``shutil.rmtree`` fail like a kill."""
    module = os if name == "rename" else shutil
    real = getattr(module, name)
    calls = []

    def fake(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, fake)


@pytest.mark.parametrize(
    "kill, expect_new",
    [(("rename", 1), False), (("rename", 2), False), (("rmtree", 1), True)],
    ids=["before-aside", "between-renames", "before-delete"],
)
def test_kill_during_replacement_leaves_one_whole_store(tmp_path, monkeypatch, kill, expect_new):
    folder = tmp_path / "s"
    old_ids, old_table = _table(5)
    new_ids, new_table = _table(7, seed=1)
    write_store(folder, old_ids, old_table)
    with monkeypatch.context() as patch:
        _kill_at(patch, *kill)
        with pytest.raises(KeyboardInterrupt):
            write_store(folder, new_ids, new_table)
    ids, table = (new_ids, new_table) if expect_new else (old_ids, old_table)
    store = EmbeddingStore.open(folder)  # readable as it is, before any recovery
    assert store.ids == ids
    np.testing.assert_allclose(store.embeddings, table.astype(np.float32))
    # The next write finishes the recovery and leaves only the store.
    write_store(folder, new_ids[:2], new_table[:2])
    assert EmbeddingStore.open(folder).ids == new_ids[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_process_killed_mid_write_leaves_previous_store(tmp_path):
    folder = tmp_path / "s"
    write_store(folder, *_table(5))
    # The module alone (numpy only), not the package: a quick process to kill.
    script = (
        "import importlib.util, os, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('store', {embedding_store.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        f"w = module.EmbeddingStoreWriter({str(folder)!r}, 100, 8)\n"
        "w.write(0, [str(i) for i in range(50)], np.ones((50, 8)))\n"
        "os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert (tmp_path / ".s.writing").is_dir()
    assert EmbeddingStore.open(folder).ids == _table(5)[0]


def test_missing_rows_and_duplicate_ids_are_refused(tmp_path):
    folder = tmp_path / "s"
    with pytest.raises(EmbeddingStoreError, match=r"rows \[2, 3\] were not written"):
        with EmbeddingStoreWriter(folder, 4, 2) as writer:
            writer.write(0, ["a", "b"], np.ones((2, 2)))
    with pytest.raises(EmbeddingStoreError, match="'a' is given twice"):
        write_store(folder, ["a", "b", "a"], np.ones((3, 2)))
    with pytest.raises(EmbeddingStoreError, match="line breaks"):
        write_store(folder, ["a\nb"], np.ones((1, 2)))
    with pytest.raises(EmbeddingStoreError, match="do not fit"):
        with EmbeddingStoreWriter(folder, 2, 2) as writer:
            writer.write(1, ["a", "b"], np.ones((2, 2)))
    assert not folder.exists() and list(tmp_path.iterdir()) == []


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


def test_folders_that_are_not_stores_get_one_line(tmp_path):
    folder = tmp_path / "s"
    with pytest.raises(EmbeddingStoreError) as error:
        EmbeddingStore.open(folder)
    assert "no such folder" in _one_line(error)
    write_store(folder, *_table(4))
    good = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(name, content, expected):
        for file_name, data in good.items():
            (folder / file_name).write_bytes(data)
        if content is None:
            (folder / name).unlink()
        else:
            (folder / name).write_bytes(content)
        with pytest.raises(EmbeddingStoreError) as error:
            EmbeddingStore.open(folder)
        message = _one_line(error)
        assert expected in message and str(folder) in message

    broken("ids.txt", None, "no ids.txt")
    broken("embeddings.npy", None, "no embeddings.npy")
    broken("meta.json", None, "no meta.json")
    broken("meta.json", b"{not json", "unreadable meta.json")
    broken("meta.json", b'{"format": "other"}', "does not describe an embedding store")
    broken("ids.txt", good["ids.txt"] + b"extra\n", "5 ids, but meta.json counts 4")
    header = json.loads(good["meta.json"])
    broken("meta.json", json.dumps({**header, "dim": 3}).encode(), "shape [4, 8]")
    broken("meta.json", json.dumps({**header, "version": 99}).encode(), "newer")
    broken("embeddings.npy", b"garbage", "unreadable")
    broken("ids.txt", b"\xff\xfe\n", "unreadable")


def test_missing_id_names_it_and_the_store(tmp_path):
    write_store(tmp_path / "s", *_table(3))
    store = EmbeddingStore.open(tmp_path / "s")
    with pytest.raises(EmbeddingStoreError) as error:
        store.get(["spk 0/utt-0.wav", "nobody"])
    assert "'nobody'" in _one_line(error) and str(tmp_path / "s") in _one_line(error)
    assert "nobody" not in store and "spk 1/utt-1.wav" in store
    assert embedding_store.is_store(tmp_path / "s") and not embedding_store.is_store(tmp_path)
