"""The recipes' loss, SpeechBrain's ``LogSoftmaxWrapper(AdditiveAngularMargin)``
without ``easy_margin``, and ``AAMSoftmaxLoss`` (the same under this package's earlier
name) against the angle written out in float64."""

import math

import numpy as np
import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

from speechbrain_w2vbert_sv.lobes.losses import AAMSoftmaxLoss


def reference_loss(cosine, targets, margin, scale):
    """ArcFace from its definition, in float64: the target logit is cos(theta + m)
    with theta = arccos(cos); past theta + m = pi, where cos(theta + m) would start
    rising again, the target cosine minus m * sin(m) (the linear continuation used
    by ArcFace and SpeechBrain)."""
    cosine = np.clip(np.asarray(cosine, dtype=np.float64), -1 + 1e-7, 1 - 1e-7)
    losses = []
    for row, y in zip(cosine, targets):
        theta = math.acos(row[y])
        target = (
            math.cos(theta + margin)
            if theta + margin <= math.pi
            else (row[y] - margin * math.sin(margin))
        )
        logits = scale * row.copy()
        logits[y] = scale * target
        top = logits.max()
        log_norm = top + math.log(np.exp(logits - top).sum())
        losses.append(log_norm - logits[y])
    return float(np.mean(losses))


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    cosine = torch.rand(64, 1, 12, generator=generator) * 2 - 1
    targets = torch.randint(0, 12, (64, 1), generator=generator)
    # Target cosines in every regime: near +1, around 0, and past theta = pi - m
    # (cos < -cos(m): the linear continuation), including exactly at the threshold.
    cosine[:8, 0, :].scatter_(1, targets[:8], 0.999)
    cosine[8:12, 0, :].scatter_(1, targets[8:12], -0.999)
    cosine[12:16, 0, :].scatter_(1, targets[12:16], -0.99)
    cosine[16, 0, targets[16, 0]] = -math.cos(0.2)
    return cosine, targets


def speechbrains(margin, scale):
    return LogSoftmaxWrapper(AdditiveAngularMargin(margin=margin, scale=scale))


def target_logits(cosine, targets, margin, scale):
    """The logits of AdditiveAngularMargin, given class indices [B]."""
    one_hot = torch.nn.functional.one_hot(targets, cosine.shape[1]).float()
    return AdditiveAngularMargin(margin=margin, scale=scale)(cosine, one_hot)


@pytest.mark.parametrize("build", [speechbrains, AAMSoftmaxLoss])
@pytest.mark.parametrize("margin, scale", [(0.2, 32.0), (0.5, 32.0), (0.3, 10.0)])
def test_loss_equals_the_angle_formula(batch, build, margin, scale):
    cosine, targets = batch
    loss = build(margin=margin, scale=scale)(cosine, targets)
    expected = reference_loss(cosine[:, 0].numpy(), targets[:, 0].numpy(), margin, scale)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # At least one target lies past theta = pi - m, so the continuation is exercised.
    assert (cosine[:, 0].gather(1, targets).squeeze(1) < -math.cos(margin)).any()


def test_the_recipe_call_with_lengths_and_bf16_predictions(batch):
    """SpeechBrain's recipes call ``compute_cost(predictions, targets, lens)``; under
    bf16 autocast the cosine logits come in bf16 and the loss is computed in float32."""
    cosine, targets = batch
    loss = AAMSoftmaxLoss()
    lens = torch.rand(len(targets))
    torch.testing.assert_close(loss(cosine, targets, lens), loss(cosine, targets), rtol=0, atol=0)
    half = cosine.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(half, targets, lens)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(half.float(), targets), rtol=0, atol=0)


def test_earlier_yamls_load_and_the_margin_is_fixed(batch):
    cosine, targets = batch
    named = [
        load_hyperpyyaml(f"compute_cost: !new:{path}\n    margin: 0.5\n    scale: 30\n")
        for path in (
            "speechbrain_w2vbert_sv.lobes.losses.AAMSoftmaxLoss",
            "speechbrain_w2vbert_sv.losses.AAMSoftmaxLoss",  # the path before lobes/
        )
    ]
    expected = speechbrains(0.5, 30.0)(cosine, targets)
    for hparams in named:
        assert hparams["compute_cost"].margin == 0.5
        torch.testing.assert_close(hparams["compute_cost"](cosine, targets), expected)
    # Earlier versions read the margin at each call: an assignment must not pass
    # silently now that SpeechBrain fixes it at construction.
    with pytest.raises(AttributeError):
        named[0]["compute_cost"].margin = 0.2


def test_the_margin_changes_only_the_target_logit_and_lowers_it():
    cosine = torch.tensor([[0.7, 0.2, -0.4], [-0.995, 0.1, 0.3]])
    targets = torch.tensor([0, 0])
    plain = target_logits(cosine, targets, margin=0.0, scale=16.0)
    margin = target_logits(cosine, targets, margin=0.3, scale=16.0)
    torch.testing.assert_close(margin[:, 1:], plain[:, 1:])
    assert (margin[:, 0] < plain[:, 0]).all()
    # Without a margin the loss is plain softmax cross-entropy of the scaled cosines.
    loss = speechbrains(margin=0.0, scale=16.0)(cosine, targets[:, None])
    torch.testing.assert_close(
        loss, torch.nn.functional.cross_entropy(16.0 * cosine, targets), rtol=1e-6, atol=1e-6
    )


def test_the_target_logit_falls_steadily_with_the_angle():
    """cos(theta + m) alone would rise again past theta = pi - m: the loss must keep
    pushing towards the class there too. The continuation starts m sin m + cos m - 1
    (about m^2 / 2) below -1: the one step larger than the slope."""
    theta = torch.linspace(0.0, math.pi, 2001, dtype=torch.float64)
    cosine = torch.stack([torch.cos(theta), torch.zeros_like(theta)], dim=1).float()
    targets = torch.zeros(len(theta), dtype=torch.long)
    target_logit = target_logits(cosine, targets, margin=0.2, scale=1.0)[:, 0]
    steps = target_logit[1:] - target_logit[:-1]
    assert (steps <= 1e-6).all()
    jump = 0.2 * math.sin(0.2) + math.cos(0.2) - 1
    assert float(-steps.min()) == pytest.approx(jump, rel=0.02)
    assert (steps.abs() > 2 * math.pi / 2000).sum() == 1
