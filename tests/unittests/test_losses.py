"""AAMSoftmaxLoss without ``easy_margin`` (the branch every recipe uses) against
independent computations: the angle written out in float64, and SpeechBrain's
``AdditiveAngularMargin`` with its ``LogSoftmaxWrapper``."""

import math

import numpy as np
import pytest
import torch
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


@pytest.mark.parametrize("margin, scale", [(0.2, 32.0), (0.5, 32.0), (0.3, 10.0)])
def test_loss_equals_the_angle_formula(batch, margin, scale):
    cosine, targets = batch
    loss = AAMSoftmaxLoss(margin=margin, scale=scale)(cosine, targets)
    expected = reference_loss(cosine[:, 0].numpy(), targets[:, 0].numpy(), margin, scale)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # At least one target lies past theta = pi - m, so the continuation is exercised.
    assert (cosine[:, 0].gather(1, targets).squeeze(1) < -math.cos(margin)).any()


@pytest.mark.parametrize("margin, scale", [(0.2, 32.0), (0.5, 30.0)])
def test_loss_and_gradient_equal_speechbrains(batch, margin, scale):
    cosine, targets = batch
    ours_input = cosine.clone().requires_grad_()
    ours = AAMSoftmaxLoss(margin=margin, scale=scale)(ours_input, targets)
    ours.backward()
    reference_input = cosine.clone().requires_grad_()
    reference = LogSoftmaxWrapper(AdditiveAngularMargin(margin=margin, scale=scale))(
        reference_input, targets
    )
    reference.backward()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=0)
    torch.testing.assert_close(ours_input.grad, reference_input.grad, rtol=1e-4, atol=1e-7)


def test_the_margin_changes_only_the_target_logit_and_lowers_it():
    cosine = torch.tensor([[0.7, 0.2, -0.4], [-0.995, 0.1, 0.3]])
    targets = torch.tensor([0, 0])
    plain = AAMSoftmaxLoss(margin=0.0, scale=16.0).logits(cosine, targets)
    margin = AAMSoftmaxLoss(margin=0.3, scale=16.0).logits(cosine, targets)
    torch.testing.assert_close(margin[:, 1:], plain[:, 1:])
    assert (margin[:, 0] < plain[:, 0]).all()
    # Without a margin the loss is plain softmax cross-entropy of the scaled cosines.
    loss = AAMSoftmaxLoss(margin=0.0, scale=16.0)(cosine, targets)
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
    target_logit = AAMSoftmaxLoss(margin=0.2, scale=1.0).logits(cosine, targets)[:, 0]
    steps = target_logit[1:] - target_logit[:-1]
    assert (steps <= 1e-6).all()
    jump = 0.2 * math.sin(0.2) + math.cos(0.2) - 1
    assert float(-steps.min()) == pytest.approx(jump, rel=0.02)
    assert (steps.abs() > 2 * math.pi / 2000).sum() == 1
