"""Speaker identification: a store's means against direct computations, incremental
enrollment against enrollment at once, removal, the model identity (int8 form accepted,
another model refused), the threshold, interrupted writes, and the block search against
a brute-force ranking. Real ASC clips go through a tiny exported model; top-1 logic on
separable speakers uses embeddings the test controls (a tiny random model does not
separate speakers; benchmarks/identification.py measures a trained one)."""

import copy
import logging
import os

import numpy as np
import pytest
import torch

from speechbrain_w2vbert_sv.applications import identification
from speechbrain_w2vbert_sv.applications.identification import (
    IdentificationError,
    SpeakerStore,
    top_k_inner_products,
)
from speechbrain_w2vbert_sv.cli import main
from speechbrain_w2vbert_sv.inference.interface import load_model
from speechbrain_w2vbert_sv.inference.quantization import quantize_dynamic_int8
from tests.unittests.test_user_errors import EXPORT, W2VBERT_EXPORT

ASC = "arabic_speech_commands"


@pytest.fixture(scope="module")
def model():
    return load_model(W2VBERT_EXPORT, run_opts={"device": "cpu"})


@pytest.fixture(scope="module")
def clips(shared_data):
    """Four ASC val speakers, three keywords each: {speaker: [paths]}."""
    rows = (shared_data / ASC / "val.csv").read_text().splitlines()[1:]
    by_speaker = {}
    for row in rows:
        path = row.split(",")[0]
        speaker = path.rsplit("/", 1)[1][:8]
        if path.endswith("_NO_01.flac"):
            by_speaker.setdefault(speaker, []).append(str(shared_data / ASC / path))
    return {s: sorted(p)[:3] for s, p in sorted(by_speaker.items())[:4]}


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _embed(model, paths):
    return model.encode_files(paths, progress=False).numpy()


def test_cli_enrolls_and_identifies_real_clips(model, clips, tmp_path, capsys):
    speakers = sorted(clips)
    store = str(tmp_path / "s")
    enroll = ["enroll", "--model", str(W2VBERT_EXPORT), "--store", store, "--no_progress"]
    # Relative paths in a list are relative to the list's folder.
    (tmp_path / "lists").mkdir()
    listed = tmp_path / "lists" / "enroll.txt"
    relative = [os.path.relpath(clips[s][0], listed.parent) for s in speakers]
    listed.write_text("".join(f"{s} {p}\n" for s, p in zip(speakers, relative)))
    (tmp_path / "bad.txt").write_text(f"{speakers[0]} lists/{speakers[0]}.flac\n")
    with pytest.raises(SystemExit, match=rf"{tmp_path}/lists/{speakers[0]}.flac: missing file"):
        main(enroll + ["--list", str(tmp_path / "bad.txt")])
    main(enroll + ["--list", str(listed)])
    assert capsys.readouterr().out.endswith("4 speakers (4 enrolled from 4 files, 0 removed)\n")
    files = [clips[s][0] for s in speakers]
    main(
        ["identify", *files, "--model", str(W2VBERT_EXPORT), "--store", store, "--top_k", "2"]
        + ["--threshold", "0.5", "--no_progress"]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    for line, path, speaker in zip(lines, files, speakers):
        fields = line.split()
        assert fields[:2] == [path, speaker] and float(fields[2]) > 0.999
        assert [f.rsplit(":", 1)[0] for f in fields[3:]][0] == speaker and len(fields) == 5
    main(
        ["enroll", "--model", str(W2VBERT_EXPORT), "--store", store, "--remove", speakers[0]]
        + ["--remove", speakers[1]]
    )
    assert SpeakerStore.open(store).names == speakers[2:]


def test_relative_list_paths_follow_the_list(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "e.txt").write_text("ann ../audio/a.wav\n\nbob  x y.wav \n")
    speakers, paths = identification.read_enrollment_list(tmp_path / "lists" / "e.txt")
    assert speakers == ["ann", "bob"]
    assert paths == [
        str(tmp_path / "lists" / "../audio/a.wav"),
        str(tmp_path / "lists" / "x y.wav"),
    ]
    (tmp_path / "bad.txt").write_text("ann\n")
    with pytest.raises(IdentificationError, match=r"bad.txt, line 1: expected"):
        identification.read_enrollment_list(tmp_path / "bad.txt")


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-6), ("float16", 5e-4)])
def test_means_and_incremental_enrollment(model, clips, tmp_path, caplog, dtype, tolerance):
    speakers = sorted(clips)[:2]
    paths = {s: clips[s] for s in speakers}
    direct = {s: _unit(_embed(model, paths[s])).mean(0) for s in speakers}
    at_once = model.enroll(
        tmp_path / "once",
        [s for s in speakers for _ in paths[s]],
        [p for s in speakers for p in paths[s]],
        dtype=dtype,
        progress=False,
    )
    for s in speakers:
        np.testing.assert_allclose(at_once.means([s])[0], direct[s], atol=tolerance)
    # The first file, then the two others: the same means and counts, and a note.
    first = [paths[s][0] for s in speakers]
    model.enroll(tmp_path / "steps", speakers, first, dtype=dtype, progress=False)
    with caplog.at_level(logging.WARNING):
        steps = model.enroll(
            tmp_path / "steps",
            [s for s in speakers for _ in paths[s][1:]],
            [p for s in speakers for p in paths[s][1:]],
            progress=False,
        )
    assert f"speaker '{speakers[0]}' is already enrolled (1 files): 2 more" in caplog.text
    assert steps.names == at_once.names and steps.counts.tolist() == [3, 3]
    assert steps.dtype == dtype
    np.testing.assert_allclose(steps.means(speakers), at_once.means(speakers), atol=tolerance)


def test_removal_keeps_the_others_without_embedding(model, clips, tmp_path, monkeypatch):
    speakers = sorted(clips)
    store = model.enroll(tmp_path / "s", speakers, [clips[s][0] for s in speakers], progress=False)
    before = np.array(store.rows)

    def no_embedding(*args, **kwargs):
        raise AssertionError("removal embedded files")

    monkeypatch.setattr(model, "encode_files", no_embedding)
    after = model.enroll(tmp_path / "s", remove=[speakers[1]])
    assert after.names == speakers[:1] + speakers[2:]
    np.testing.assert_array_equal(np.array(after.rows), before[[0, 2, 3]])
    with pytest.raises(IdentificationError) as error:
        model.enroll(tmp_path / "s", remove=["nobody"])
    assert str(error.value) == f"cannot remove 'nobody': not in {tmp_path / 's'} (3 speakers)"
    assert SpeakerStore.open(tmp_path / "s").names == after.names


def test_model_identity(model, clips, tmp_path):
    speakers = sorted(clips)
    model.enroll(tmp_path / "s", speakers, [clips[s][0] for s in speakers], progress=False)
    # The int8 form of the same model shares the store.
    int8 = copy.deepcopy(model)
    int8.mods.embedding_model = quantize_dynamic_int8(int8.mods.embedding_model)
    results = int8.identify(tmp_path / "s", [clips[speakers[2]][0]], threshold=0.0)
    assert results[0].speaker == speakers[2]
    # Other models are refused in one line naming both.
    other = load_model(EXPORT, run_opts={"device": "cpu"})
    retrained = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for weights in retrained.mods.embedding_model.parameters():
            weights.copy_(torch.randn_like(weights) * weights.std())
    for wrong, name in ((other, "conformer_mfa"), (retrained, "retrained")):
        with pytest.raises(IdentificationError) as error:
            wrong.identify(tmp_path / "s", [clips[speakers[0]][0]], model_name=name)
        message = str(error.value)
        assert "\n" not in message and "identity probe" in message
        assert "'the given model'" in message and f"not '{name}'" in message
        with pytest.raises(IdentificationError):
            wrong.enroll(tmp_path / "s", ["x"], [clips[speakers[0]][1]], progress=False)
    assert SpeakerStore.open(tmp_path / "s").names == speakers


def test_threshold_answers_unknown(model, clips, tmp_path):
    speakers = sorted(clips)
    model.enroll(tmp_path / "s", speakers[:2], [clips[s][0] for s in speakers[:2]], progress=False)
    probe = [clips[speakers[3]][0]]
    (best,) = model.identify(tmp_path / "s", probe, top_k=2, threshold=-1.0)
    assert best.speaker in speakers[:2] and [n for n, _ in best.candidates] != []
    assert best.score == best.candidates[0][1] >= best.candidates[1][1]
    above = model.identify(tmp_path / "s", probe, threshold=best.score - 1e-4)[0]
    below = model.identify(tmp_path / "s", probe, threshold=best.score + 1e-4)[0]
    assert above.speaker == best.speaker and below.speaker == "unknown"
    # By default the model's threshold decides.
    default = model.identify(tmp_path / "s", probe)[0]
    expected = best.speaker if best.score >= model.hparams.threshold else "unknown"
    assert default.speaker == expected


def test_interrupted_write_keeps_the_previous_store(model, clips, tmp_path, monkeypatch):
    speakers = sorted(clips)
    store = model.enroll(
        tmp_path / "s", speakers[:2], [clips[s][0] for s in speakers[:2]], progress=False
    )
    rows = np.array(store.rows)

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(identification.EmbeddingStoreWriter, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        model.enroll(
            tmp_path / "s", speakers[2:], [clips[s][0] for s in speakers[2:]], progress=False
        )
    kept = SpeakerStore.open(tmp_path / "s")
    assert kept.names == speakers[:2]
    np.testing.assert_array_equal(np.array(kept.rows), rows)


def test_names_that_cannot_be_stored(model, clips, tmp_path):
    for name in ("unknown", "two words", ""):
        with pytest.raises(IdentificationError):
            model.enroll(tmp_path / "s", [name], [clips[sorted(clips)[0]][0]])
    assert not (tmp_path / "s").exists()


def test_top1_on_separable_speakers_and_search_against_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    count, dim = 3000, 32
    centres = rng.standard_normal((count, dim))
    enrolled = np.repeat(centres, 2, 0) + 0.3 * rng.standard_normal((2 * count, dim))
    names = [f"spk{i}" for i in range(count)]
    store = SpeakerStore.create(dim, rng.standard_normal(dim), "toy")
    store = store.updated([n for n in names for _ in range(2)], enrolled).save(tmp_path / "s")
    queries = centres[:50] + 0.3 * rng.standard_normal((50, dim))
    for batch in (queries[:1], queries[:3], queries):  # float16 and float32 paths
        results = store.identify(batch, top_k=3, threshold=0.0)
        assert [r.speaker for r in results] == names[: len(batch)]
    # The block search ranks as a brute-force product, across blocks.
    table = np.asarray(store.rows)
    for batch in (queries[:1], queries[:20]):  # float16 and float32 paths
        unit = _unit(batch).astype(np.float32)
        scores, rows = top_k_inner_products(table, unit, 5, block_rows=700)
        exact = unit @ table.astype(np.float32).T
        np.testing.assert_array_equal(rows, np.argsort(-exact, 1)[:, :5])
        np.testing.assert_allclose(scores, np.sort(exact, 1)[:, ::-1][:, :5], atol=2e-3)


def test_removal_and_additions_in_one_write(tmp_path):
    rng = np.random.default_rng(1)
    files = rng.standard_normal((6, 6))
    store = SpeakerStore.create(6, rng.standard_normal(6), "toy", dtype="float32")
    store = store.updated(["a", "b", "c"], files[:3]).save(tmp_path / "s")
    store = store.removed(["b"]).updated(["c", "d", "a"], files[[5, 4, 3]]).save(tmp_path / "s")
    assert store.names == ["a", "c", "d"] and store.counts.tolist() == [2, 2, 1]
    unit = _unit(files)
    expected = [unit[[0, 3]].mean(0), unit[[2, 5]].mean(0), unit[4]]
    np.testing.assert_allclose(store.means(["a", "c", "d"]), expected, atol=1e-6)
