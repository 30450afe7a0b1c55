"""recipes/VoxCeleb/seed_spread.py: the seed table from compare_conformer.py folders."""

import importlib.util
import json
import statistics

import pytest

from tests.conftest import REPO_ROOT


def _seed_spread():
    spec = importlib.util.spec_from_file_location(
        "seed_spread", REPO_ROOT / "recipes" / "VoxCeleb" / "seed_spread.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_folder(folder, eers, wer=None):
    folder.mkdir(parents=True)
    rows = [
        {
            "name": name,
            "system": f"system {name}",
            "EER_last": eer,
            "minDCF_last": 0.5,
            "EER": eer - 1.0,
        }
        for name, eer in eers.items()
    ]
    (folder / "rows.json").write_text(json.dumps(rows))
    if wer is not None:
        asr = folder / "asr_conformer_ctc" / "pretrained"
        asr.mkdir(parents=True)
        (asr / "wer.json").write_text(json.dumps({"val_speakers_greedy_wer": wer}))


def test_table_and_pairs_give_mean_and_sample_spread(tmp_path, capsys):
    seed_spread = _seed_spread()
    random_eers, adaptor_eers, wers = [12.1, 15.3, 13.0], [26.9, 25.0, 28.2], [12.1, 14.0, 13.3]
    for i, (a, b, w) in enumerate(zip(random_eers, adaptor_eers, wers)):
        _run_folder(tmp_path / f"seed{i}", {"random": a, "adaptor": b}, wer=w)
    seed_spread.main(
        [str(tmp_path / f"seed{i}") for i in range(3)] + ["--output", str(tmp_path / "table.md")]
    )
    out = capsys.readouterr().out.strip().splitlines()
    pairs = dict(pair.split("=") for pair in out[-1].split())
    assert float(pairs["eer_random_mean"]) == pytest.approx(statistics.mean(random_eers), abs=0.005)
    assert float(pairs["eer_random_sd"]) == pytest.approx(statistics.stdev(random_eers), abs=0.005)
    adaptor_sd = statistics.stdev(adaptor_eers)
    assert float(pairs["eer_adaptor_sd"]) == pytest.approx(adaptor_sd, abs=0.005)
    assert float(pairs["asr_wer_mean"]) == pytest.approx(statistics.mean(wers), abs=0.005)
    table = (tmp_path / "table.md").read_text()
    assert "| system random | 3 | 13.47 ± 1.65 (12.10-15.30) |" in table
    assert "(3 runs): 13.13 ± 0.96 (12.10-14.00) %" in table


def test_an_unfinished_run_is_named(tmp_path):
    seed_spread = _seed_spread()
    _run_folder(tmp_path / "done", {"random": 12.0})
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(ValueError, match="unfinished/rows.json: missing"):
        seed_spread.main([str(tmp_path / "done"), str(tmp_path / "unfinished")])


def test_epoch_table_reads_the_train_logs_of_unfinished_runs(tmp_path, capsys):
    seed_spread = _seed_spread()
    line = (
        "epoch: {}, backbone_lr: 2.00e-03, head_lr: 2.00e-03 - train loss: 11.25, "
        "train error: 9.78e-01 - valid EER: {}, valid minDCF: 9.98e-01\n"
    )
    for seed, eers in [(1, [44.12, 35.36]), (2, [41.60, 30.12]), (3, [44.23])]:
        (tmp_path / f"s{seed}" / "random").mkdir(parents=True)
        (tmp_path / f"s{seed}" / "random" / "train_log.txt").write_text(
            "".join(line.format(epoch, eer) for epoch, eer in enumerate(eers, 1))
        )
    seed_spread.main([str(tmp_path / f"s{seed}") for seed in (1, 2, 3)] + ["--epochs"])
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert rows == [
        "| random | 1 | 3 | 44.12, 41.60, 44.23 | 43.32 ± 1.49 (41.60-44.23) |",
        "| random | 2 | 2 | 35.36, 30.12 | 32.74 ± 3.71 (30.12-35.36) |",
    ]
