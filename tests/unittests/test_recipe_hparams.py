"""The recipe's hyperparameter files build what the paper's stages prescribe.

Each file is loaded with a tiny random w2v-BERT in place of the full-size one.
"""

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

from speechbrain_w2vbert_sv.lobes.heads import LayerSumHead, MFAHead
from tests.conftest import REPO_ROOT

HPARAMS = REPO_ROOT / "recipes" / "VoxCeleb" / "hparams"
TINY = {
    "data_folder": None,
    "trials_folder": None,
    "w2vbert_source": None,
    "w2vbert_config": {
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    },
    "num_hidden_states": 3,
    "hidden_size": 16,
}


def load(name, tmp_path, **overrides):
    if name != "quickstart":
        overrides = {**TINY, **overrides}
    overrides["output_folder"] = str(tmp_path)
    with open(HPARAMS / f"{name}.yaml", encoding="utf-8") as f:
        return load_hyperpyyaml(f, overrides)


def trainable(module):
    return {n for n, p in module.named_parameters() if p.requires_grad}


def embed(hparams):
    model = hparams["embedding_model"].eval()
    with torch.no_grad():
        return model(0.1 * torch.randn(2, 8000), torch.tensor([1.0, 0.7]))


def test_stage1_frozen_encoder_with_lora(tmp_path):
    hp = load("stage1", tmp_path)
    backbone = hp["embedding_model"].backbone
    assert backbone.has_lora and trainable(backbone)
    assert all(".lora_" in n for n in trainable(backbone))
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable(backbone)} == {
        "linear_q",
        "linear_v",
    }
    assert hp["lora_rank"] == 64 and hp["lora_alpha"] == 128
    assert isinstance(hp["embedding_model"].head, MFAHead)
    aam = hp["compute_cost"].loss_fn
    assert (aam.margin, aam.scale) == (0.2, 32)
    schedule = hp["lr_schedule"]
    assert (schedule.warmup_epochs, schedule.decay, schedule.milestones, schedule.gamma) == (
        5,
        "step",
        [10],
        0.1,
    )
    assert (hp["number_of_epochs"], hp["lr"], hp["weight_decay"]) == (15, 1e-4, 1e-4)
    assert (hp["batch_size"], hp["crop_seconds"], hp["speed_perturb"]) == (
        64,
        [2.0, 3.0],
        [0.9, 1.0, 1.1],
    )
    assert hp["make_augment"] is not None
    assert (hp["precision"], hp["max_grad_norm"]) == ("bf16", 1.0)
    assert embed(hp).shape == (2, 1, 256)


def test_stage2_everything_trains_with_a_cosine_decay(tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        load("stage2", tmp_path)  # the stage-1 folder must be given
    hp = load("stage2", tmp_path, init_from="results/stage1")
    model = hp["embedding_model"]
    assert not model.backbone.has_lora
    assert trainable(model) == {n for n, _ in model.named_parameters()}
    schedule = hp["lr_schedule"]
    schedule.steps_per_epoch = 10
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=hp["lr"])
    lrs = [schedule([opt]) * hp["lr"] for _ in range(40)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(5e-6, rel=0.01)
    assert hp["number_of_epochs"] == 4 and hp["compute_cost"].loss_fn.margin == 0.2


def test_stage3_large_margin_fine_tuning(tmp_path):
    hp = load("stage3", tmp_path, init_from="results/stage2")
    assert hp["compute_cost"].loss_fn.margin == 0.5
    assert (hp["crop_seconds"], hp["batch_size"], hp["number_of_epochs"]) == ([5.0, 6.0], 32, 2)
    assert hp["make_augment"] is None
    assert not hp["embedding_model"].backbone.has_lora


def test_ecapa_baseline_is_speechbrains_ecapa_on_a_layer_sum(tmp_path):
    hp = load("ecapa_baseline", tmp_path)
    head = hp["embedding_model"].head
    assert isinstance(head, LayerSumHead) and isinstance(head.encoder, ECAPA_TDNN)
    assert head.layer_sum.weights.shape == (3,)
    assert not trainable(hp["embedding_model"].backbone)
    assert embed(hp).shape == (2, 1, 192)


def test_quickstart_is_small_and_synthetic(tmp_path):
    hp = load("quickstart", tmp_path)
    assert hp["data_format"] == "synthetic"
    assert sum(p.numel() for p in hp["embedding_model"].parameters()) < 1e6
    assert embed(hp).shape == (2, 1, 128)
