"""PruningDistillationBrain: loss, optimizers, frozen teacher, checkpoints."""

import copy

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone, encoder_hidden_states
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank
from speechbrain_w2vbert_sv.pruning import GatedWav2Vec2Bert, LagrangianSparsityController
from speechbrain_w2vbert_sv.pruning.distillation import PruningDistillationBrain
from speechbrain_w2vbert_sv.training.asr_distillation import feature_distillation_loss
from speechbrain_w2vbert_sv.training.checkpoints import AtomicCheckpointer

CONFIG = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 32,
    "conv_depthwise_kernel_size": 3,
}


def make_brain(student, controller=None, checkpointer=None):
    torch.manual_seed(0)
    teacher = W2VBertBackbone(config=CONFIG)
    if student == "gated":
        student = GatedWav2Vec2Bert(copy.deepcopy(teacher.model))
    elif student == "plain":
        student = copy.deepcopy(teacher.model)
    modules = {"student": student}
    if controller is not None:
        modules["controller"] = controller
    return PruningDistillationBrain(
        modules=modules,
        hparams={
            "teacher_encoder": teacher,
            "frontend": W2VBertFbank(),
            "weights_opt_class": lambda p: torch.optim.SGD(p, lr=1e-3),
            "gates_opt_class": lambda p: torch.optim.SGD(p, lr=1e-2),
            "lambdas_opt_class": lambda p: torch.optim.SGD(p, lr=1.0),
        },
        run_opts={"noprogressbar": True, "max_grad_norm": 1e9},
        checkpointer=checkpointer,
    )


def batch():
    torch.manual_seed(1)
    return PaddedBatch(
        [{"id": "a", "sig": torch.randn(4000)}, {"id": "b", "sig": torch.randn(2400)}]
    )


def test_loss_is_distillation_plus_lagrangian_term_and_multipliers_ascend():
    controller = LagrangianSparsityController(target_sparsity=0.8, warmup_steps=0)
    with torch.no_grad():
        controller.lambda1.fill_(-5.0)
    brain = make_brain("gated", controller)
    brain.init_optimizers()
    assert sorted(brain.optimizers_dict) == [
        "gates_optimizer",
        "lambdas_optimizer",
        "weights_optimizer",
    ]
    gated = brain.modules["student"]
    gate_ids = {id(p) for p in gated.gate_parameters()}
    weights = brain.optimizers_dict["weights_optimizer"].param_groups[0]["params"]
    assert not gate_ids & {id(p) for p in weights}
    assert len(weights) == len(list(gated.model.parameters()))

    gated.eval()  # deterministic gates: the loss can be recomputed independently
    predictions = brain.compute_forward(batch(), stage=None)
    student, teacher, lengths = predictions
    sparsity = gated.expected_sparsity()
    loss = brain.compute_objectives(predictions, batch(), sb.Stage.TRAIN)
    gap = sparsity - 0.8
    expected = feature_distillation_loss(student, teacher, lengths) - 5.0 * gap
    torch.testing.assert_close(loss, expected)
    assert not teacher.requires_grad  # frozen teacher, no graph

    # One step: expected sparsity < target, so lambda1 goes down (gradient ascent on
    # lambda1 * gap), and with lambda1 < 0 the gates move towards more sparsity.
    gated.train()
    before = sparsity.item()
    brain.fit_batch(batch())
    assert controller.lambda1.item() == pytest.approx(-5.0 + gap.item(), abs=1e-3)
    assert gated.expected_sparsity().item() > before


def test_identical_student_starts_at_zero_loss_and_plain_student_has_one_optimizer():
    brain = make_brain("plain")
    brain.init_optimizers()
    assert list(brain.optimizers_dict) == ["weights_optimizer"]
    brain.modules["student"].eval()
    student, teacher, lengths = brain.compute_forward(batch(), stage=None)
    torch.testing.assert_close(student, teacher)
    assert feature_distillation_loss(student, teacher, lengths).item() < 1e-5


def test_checkpoint_holds_gates_controller_and_optimizers(tmp_path):
    controller = LagrangianSparsityController(target_sparsity=0.5, warmup_steps=4)
    checkpointer = AtomicCheckpointer(tmp_path, {"controller": controller})
    brain = make_brain("gated", controller, checkpointer)
    checkpointer.add_recoverable("student", brain.modules["student"])
    brain.init_optimizers()
    brain.fit_batch(batch())
    ckpt = checkpointer.save_checkpoint()
    files = {p.name for p in ckpt.path.iterdir()}
    assert {
        "student.ckpt",
        "controller.ckpt",
        "gates_optimizer.ckpt",
        "lambdas_optimizer.ckpt",
        "weights_optimizer.ckpt",
    } <= files
    state = torch.load(ckpt.paramfiles["student"])
    assert any(k.startswith("gates.") and k.endswith("log_alpha") for k in state)
    torch.testing.assert_close(
        state["gates.ffn1.0.log_alpha"],
        brain.modules["student"].gates["ffn1"][0].log_alpha.detach(),
    )


def test_hidden_states_of_a_gated_model_equal_those_of_its_materialisation():
    teacher = W2VBertBackbone(config=CONFIG)
    gated = GatedWav2Vec2Bert(teacher.model, ffn_drop_rate=0.5).eval()
    with torch.no_grad():
        for gates in gated.gates["ffn1"]:
            gates.log_alpha[::2] = -10.0  # half the units removed
    feats, lengths = torch.randn(2, 9, 160), torch.tensor([1.0, 0.5])
    with torch.no_grad():
        expected = encoder_hidden_states(gated, feats, lengths)
        got = encoder_hidden_states(gated.materialize().eval(), feats, lengths)
    torch.testing.assert_close(got[:, 0], expected[:, 0], atol=1e-5, rtol=0)
