"""``python -m speechbrain_w2vbert_sv.sizes`` counts what each stage trains.

Checked against the recipes themselves: each stage yaml is built at a tiny encoder
size, its classifier made as train.py makes it, and the parameters its optimisers
see (those that require gradients) are counted; ``full_size_counts`` with the same tiny
configuration must give the same numbers.
"""

import pathlib

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_w2vbert_sv.sizes import VOXCELEB2_CLASSES, full_size_counts, main

HPARAMS = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb" / "hparams"
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
}


def test_full_size_stage_counts_include_the_classifier(capsys):
    counts = full_size_counts()
    assert counts["classifier"] == 256 * VOXCELEB2_CLASSES == 4_603_392
    assert counts["stage1_trainable"] == (
        counts["lora_trainable"] + counts["head"] + counts["classifier"]
    )
    assert counts["stage2_trainable"] == counts["encoder"] + counts["head"] + counts["classifier"]
    main([])
    assert "stage1_trainable:    17.06 M (17,055,488)" in capsys.readouterr().out


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
def test_tiny_stage_counts_match_the_recipe(stage, tmp_path):
    overrides = {
        "output_folder": str(tmp_path),
        "data_folder": None,
        "trials_folder": None,
        "init_from": None,
        "w2vbert_source": None,
        "w2vbert_config": TINY,
        "num_hidden_states": 3,
        "hidden_size": 32,
        "embedding_size": 16,
    }
    with open(HPARAMS / f"{stage}.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    classifier = hparams["make_classifier"](out_neurons=30)
    trained = torch.nn.ModuleList([hparams["embedding_model"], classifier])
    in_recipe = sum(p.numel() for p in trained.parameters() if p.requires_grad)

    counts = full_size_counts(
        num_classes=30, config=TINY, head={"input_size": 32, "embedding_size": 16}
    )
    key = "stage1_trainable" if stage == "stage1" else "stage2_trainable"
    assert counts[key] == in_recipe
