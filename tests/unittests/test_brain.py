"""SpeakerBrain, its learning-rate schedule, crash-safe checkpoints and stage init."""

import math
import random

import pytest
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.lobes.models.ECAPA_TDNN import Classifier

from speechbrain_w2vbert_sv.lobes.embedding_model import SpeakerEmbeddingModel
from speechbrain_w2vbert_sv.lobes.heads import MFAHead
from speechbrain_w2vbert_sv.lobes.losses import AAMSoftmaxLoss
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank
from speechbrain_w2vbert_sv.scoring.trials import Trials
from speechbrain_w2vbert_sv.training.checkpoints import (
    AtomicCheckpointer,
    best_checkpoint,
    init_from_checkpoint,
)
from speechbrain_w2vbert_sv.training.schedules import WarmupDecaySchedule
from speechbrain_w2vbert_sv.training.speaker_brain import SpeakerBrain

TINY_CONFIG = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "conv_depthwise_kernel_size": 3,
}


def tiny_model(**backbone_kwargs):
    torch.manual_seed(0)
    return SpeakerEmbeddingModel(
        W2VBertFbank(),
        W2VBertBackbone(config=TINY_CONFIG, **backbone_kwargs),
        MFAHead(
            num_hidden_states=3,
            input_size=16,
            adapter_size=8,
            attention_channels=4,
            embedding_size=8,
        ),
    )


def make_brain(model, num_classes=3, **hparams):
    adamw = lambda params: torch.optim.AdamW(params, lr=1e-3)  # noqa: E731
    return SpeakerBrain(
        modules={
            "embedding_model": model,
            "classifier": Classifier(8, lin_blocks=0, out_neurons=num_classes),
        },
        hparams={
            "compute_cost": AAMSoftmaxLoss(),
            "backbone_opt_class": adamw,
            "head_opt_class": adamw,
            **hparams,
        },
        run_opts={"noprogressbar": True, "device": "cpu"},
    )


def batch(n=2, samples=4000, labels=None):
    generator = torch.Generator().manual_seed(n)
    labels = labels or list(range(n))
    return PaddedBatch(
        [
            {
                "id": f"u{i}",
                "sig": 0.1 * torch.randn(samples, generator=generator),
                "spk_label": torch.tensor([labels[i]]),
            }
            for i in range(n)
        ]
    )


# ----------------------------------------------------------------------- schedule
def test_schedule_warmup_then_step_decay_per_optimizer_step():
    schedule = WarmupDecaySchedule(warmup_epochs=2, decay="step", milestones=[3, 4], gamma=0.1)
    schedule.steps_per_epoch = 5
    params = [torch.nn.Parameter(torch.zeros(1))]
    backbone, head = torch.optim.SGD(params, lr=1e-4), torch.optim.SGD(params, lr=1e-2)
    factors = [schedule([backbone, head]) for _ in range(25)]
    # Linear warm-up over 10 steps, 1 until 3 epochs (15 steps), then 0.1, then 0.01.
    expected = [(i + 1) / 10 for i in range(10)] + [1.0] * 5 + [0.1] * 5 + [0.01] * 5
    assert factors == pytest.approx(expected)
    assert backbone.param_groups[0]["lr"] == pytest.approx(1e-6)
    assert head.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_schedule_cosine_ends_at_the_final_learning_rate():
    schedule = WarmupDecaySchedule(decay="cosine", total_epochs=4, final_factor=0.5)
    schedule.steps_per_epoch = 10
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-5)
    lrs = [schedule([opt]) * 1e-5 for _ in range(40)]
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[20] == pytest.approx(0.75e-5)  # half way: mean of 1e-5 and 5e-6
    assert lrs[-1] == pytest.approx(5e-6 + 0.5e-5 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_schedule_resumes_from_its_checkpoint(tmp_path):
    schedule = WarmupDecaySchedule(warmup_epochs=1)
    schedule.steps_per_epoch = 4
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for _ in range(3):
        schedule([opt])
    AtomicCheckpointer(tmp_path, {"schedule": schedule}).save_checkpoint(end_of_epoch=False)
    resumed = WarmupDecaySchedule(warmup_epochs=1)
    resumed.steps_per_epoch = 4
    AtomicCheckpointer(tmp_path, {"schedule": resumed}).recover_if_possible()
    assert resumed.n_steps == 3
    assert resumed([opt]) == schedule([opt]) == 1.0


def test_schedule_rejects_bad_settings():
    with pytest.raises(ValueError, match="decay"):
        WarmupDecaySchedule(decay="linear")
    with pytest.raises(ValueError, match="total_epochs"):
        WarmupDecaySchedule(decay="cosine")
    with pytest.raises(RuntimeError, match="steps_per_epoch"):
        WarmupDecaySchedule()([])


# -------------------------------------------------------------------- checkpoints
class FailingSaver(torch.nn.Module):
    """A recoverable whose save dies half way, as a killed process would."""

    def __init__(self):
        super().__init__()
        self.fail = False
        self.weight = torch.nn.Parameter(torch.zeros(2))

    def state_dict(self, *args, **kwargs):
        if self.fail:
            raise KeyboardInterrupt("killed while saving")
        return super().state_dict(*args, **kwargs)


def test_a_save_cut_short_leaves_no_checkpoint(tmp_path):
    layer, failing = torch.nn.Linear(2, 2), FailingSaver()
    checkpointer = AtomicCheckpointer(tmp_path, {"a_layer": layer, "z_failing": failing})
    first = checkpointer.save_checkpoint(meta={"EER": 1.0})
    failing.fail = True
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save_checkpoint(meta={"EER": 0.5})
    # The layer file of the second save was written, but only in staging.
    assert [c.path for c in checkpointer.list_checkpoints()] == [first.path]
    assert len(list(tmp_path.glob("CKPT+*"))) == 1
    failing.fail = False
    checkpointer.save_checkpoint(meta={"EER": 0.2})
    assert not any((tmp_path / ".staging").iterdir())


def test_a_deletion_cut_short_is_ignored_then_removed(tmp_path):
    layer = torch.nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(tmp_path, {"layer": layer})
    good = checkpointer.save_checkpoint(meta={"EER": 2.0})
    half = checkpointer.save_checkpoint(meta={"EER": 1.0})
    (half.path / "layer.ckpt").unlink()  # as SpeechBrain's rmtree would leave it
    assert best_checkpoint(checkpointer).path == good.path
    checkpointer.save_checkpoint(meta={"EER": 3.0})
    folders = list(tmp_path.glob("CKPT+*"))
    assert len(folders) == 2  # the incomplete one is gone (its name may be reused)
    assert sorted(c.meta["EER"] for c in checkpointer.list_checkpoints()) == [2.0, 3.0]


def test_best_checkpoint_prefers_eer_then_dev_error_then_latest(tmp_path):
    checkpointer = AtomicCheckpointer(tmp_path, {"layer": torch.nn.Linear(2, 2)})
    assert best_checkpoint(checkpointer) is None
    first = checkpointer.save_checkpoint(meta={})
    assert best_checkpoint(checkpointer).path == first.path
    by_error = checkpointer.save_checkpoint(meta={"dev_error": 0.1})
    checkpointer.save_checkpoint(meta={"dev_error": 0.3})
    assert best_checkpoint(checkpointer).path == by_error.path
    by_eer = checkpointer.save_checkpoint(meta={"EER": 9.0, "dev_error": 0.5})
    assert best_checkpoint(checkpointer).path == by_eer.path


# --------------------------------------------------------------- init from stage
def test_init_from_merges_lora_and_rejects_what_does_not_fit(tmp_path):
    stage1 = tiny_model(freeze=True, lora_rank=2, lora_alpha=4)
    with torch.no_grad():  # trained adapters: B is no longer zero
        for name, param in stage1.named_parameters():
            if "lora_B" in name:
                param.normal_()
    AtomicCheckpointer(tmp_path / "save", {"embedding_model": stage1}).save_checkpoint(
        meta={"EER": 5.0}
    )

    stage2 = tiny_model()
    init_from_checkpoint(tmp_path, {"embedding_model": stage2})
    wavs = 0.1 * torch.randn(2, 4000)
    with torch.no_grad():
        torch.testing.assert_close(stage2.eval()(wavs), stage1.eval()(wavs), atol=1e-5, rtol=1e-4)

    with pytest.raises(ValueError, match="no classifier.ckpt"):
        init_from_checkpoint(tmp_path, {"classifier": torch.nn.Linear(8, 3)})
    wider = SpeakerEmbeddingModel(
        W2VBertFbank(),
        W2VBertBackbone(config=TINY_CONFIG),
        MFAHead(
            num_hidden_states=3,
            input_size=16,
            adapter_size=8,
            attention_channels=4,
            embedding_size=12,
        ),
    )
    with pytest.raises(ValueError, match="does not fit"):
        init_from_checkpoint(tmp_path, {"embedding_model": wider})
    with pytest.raises(ValueError, match="not a folder"):
        init_from_checkpoint(tmp_path / "nowhere", {"embedding_model": stage2})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no checkpoint"):
        init_from_checkpoint(tmp_path / "empty", {"embedding_model": stage2})


# --------------------------------------------------------------------- the Brain
def test_optimizers_split_backbone_and_head():
    brain = make_brain(tiny_model(freeze=True, lora_rank=2, lora_alpha=4))
    brain.init_optimizers()
    backbone = {
        id(p) for g in brain.optimizers_dict["backbone_optimizer"].param_groups for p in g["params"]
    }
    lora = {id(p) for n, p in brain.modules.embedding_model.named_parameters() if "lora_" in n}
    assert backbone == lora  # the frozen weights stay out, the adapters are the backbone's
    head = brain.optimizers_dict["head_optimizer"].param_groups[0]["params"]
    assert (
        len(head) == len(list(brain.modules.embedding_model.head.parameters())) + 1
    )  # + classifier

    frozen = make_brain(tiny_model(freeze=True))
    frozen.init_optimizers()
    assert list(frozen.optimizers_dict) == ["head_optimizer"]


def test_each_optimizer_is_clipped_and_the_schedule_steps_with_it():
    schedule = WarmupDecaySchedule(warmup_epochs=1)
    schedule.steps_per_epoch = 4
    brain = make_brain(tiny_model(), lr_schedule=schedule)
    brain.max_grad_norm = 1e-3
    brain.grad_accumulation_factor = 2
    brain.init_optimizers()
    norms = {}
    for name, opt in brain.optimizers_dict.items():
        params = opt.param_groups[0]["params"]
        opt.register_step_pre_hook(
            lambda o, a, k, name=name, params=params: norms.__setitem__(
                name, torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
            )
        )
    for step in range(1, 5):
        brain.step = step  # as Brain.fit counts batches
        brain.fit_batch(batch())
    assert set(norms) == {"backbone_optimizer", "head_optimizer"}
    assert all(n <= 1e-3 * 1.0001 for n in norms.values())
    assert brain.optimizer_step == schedule.n_steps == 2  # 4 batches, accumulation 2
    assert brain.optimizers_dict["head_optimizer"].param_groups[0]["lr"] == pytest.approx(0.5e-3)


def test_evaluation_collects_embeddings_and_scores_trials():
    brain = make_brain(tiny_model(), dev_labels=None)
    brain.dev_labels = {"u0": 0, "u1": 0}
    brain.on_stage_start(sb_stage("VALID"))
    brain.evaluate_batch(batch(), sb_stage("VALID"))
    assert set(brain.embeddings) == {"u0", "u1"} and len(brain.dev_errors) == 2
    brain.embeddings = {
        "a": torch.tensor([1.0, 0.0]),
        "b": torch.tensor([0.9, 0.1]),
        "c": torch.tensor([0.0, 1.0]),
    }
    trials = Trials.from_lists([1, 0, 1], ["a", "a", "a"], ["b", "c", "missing"])
    result = brain.score_trials(trials)  # the trial on a missing utterance is dropped
    assert (result["EER"], result["target_trials"], result["nontarget_trials"]) == (0.0, 1, 1)


def sb_stage(name):
    import speechbrain as sb

    return getattr(sb.Stage, name)


def test_training_batches_are_cut_to_a_random_length_of_the_crop_range():
    seen = []

    def augment(wavs, wav_lens):
        seen.append(wavs.shape[1])
        return wavs

    brain = make_brain(tiny_model(), crop_seconds=[0.1, 0.25], sample_rate=16000, augment=augment)
    brain.init_optimizers()
    random.seed(0)
    for _ in range(6):
        brain.fit_batch(batch(samples=4000))
    # Cut before the augmentation, within [1600, 4000] samples, not always the same.
    assert all(1600 <= n <= 4000 for n in seen) and len(set(seen)) > 1
