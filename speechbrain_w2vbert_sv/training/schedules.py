"""Per-step learning-rate schedules: linear warm-up, then step or cosine decay."""

import math

import yaml
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)


@register_checkpoint_hooks
class WarmupDecaySchedule:
    """Learning-rate factor per optimizer step: linear warm-up, then step or cosine decay.

    Written here because SpeechBrain's schedulers either count epochs (so no smooth
    per-step warm-up) or count steps with no epoch milestones and no cosine to a
    floor. Every optimizer's learning rate is its initial one times the factor, so
    one schedule drives the backbone and head optimizers alike. The schedule is a
    checkpoint recoverable (it stores the number of steps taken).

    Arguments
    ---------
    warmup_epochs : float
        Length of the linear warm-up from 0 to the full learning rate.
    decay : str
        ``"step"`` (times ``gamma`` at each milestone), ``"cosine"`` (from 1 to
        ``final_factor`` over the epochs after the warm-up) or ``"none"``.
    milestones : list of float
        Epochs after which the rate is multiplied by ``gamma`` (``"step"``).
    gamma : float
        Factor applied at each milestone.
    total_epochs : float, optional
        Length of the training (needed by ``"cosine"``).
    final_factor : float
        Factor reached at the end of a cosine decay.

    Example
    -------
    >>> import torch
    >>> schedule = WarmupDecaySchedule(warmup_epochs=1, milestones=[2], gamma=0.1)
    >>> schedule.steps_per_epoch = 4
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> [round(schedule([opt]), 2) for _ in range(12)]
    [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]
    >>> cosine = WarmupDecaySchedule(decay="cosine", total_epochs=2, final_factor=0.5)
    >>> [round(cosine.factor(e), 3) for e in (0, 1, 2)]
    [1.0, 0.75, 0.5]
    """

    def __init__(
        self,
        warmup_epochs=0.0,
        decay="step",
        milestones=(),
        gamma=0.1,
        total_epochs=None,
        final_factor=0.0,
    ):
        if decay not in ("step", "cosine", "none"):
            raise ValueError(f"decay must be 'step', 'cosine' or 'none', got {decay!r}")
        if decay == "cosine" and total_epochs is None:
            raise ValueError("a cosine decay needs total_epochs")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.warmup_epochs = float(warmup_epochs)
        self.decay = decay
        self.milestones = sorted(float(m) for m in milestones)
        self.gamma = float(gamma)
        self.total_epochs = None if total_epochs is None else float(total_epochs)
        self.final_factor = float(final_factor)
        self.n_steps = 0
        # Set by the Brain when the training loader is built (it depends on the data).
        self.steps_per_epoch = None

    def factor(self, epochs):
        """Learning-rate factor after a (fractional) number of epochs, warm-up aside.

        Arguments
        ---------
        epochs : float
            Epochs of training done.

        Returns
        -------
        float
        """
        if self.decay == "step":
            return self.gamma ** sum(epochs >= m for m in self.milestones)
        if self.decay == "cosine":
            span = self.total_epochs - self.warmup_epochs
            progress = min(1.0, max(0.0, epochs - self.warmup_epochs) / span) if span > 0 else 1.0
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            return self.final_factor + (1.0 - self.final_factor) * cosine
        return 1.0

    def __call__(self, optimizers):
        """Sets the learning rates of the coming optimizer step and counts the step.

        Arguments
        ---------
        optimizers : iterable of torch.optim.Optimizer
            Their groups' ``initial_lr`` (set from ``lr`` on first use) is scaled.

        Returns
        -------
        float
            The factor applied.
        """
        if not self.steps_per_epoch:
            raise RuntimeError("WarmupDecaySchedule.steps_per_epoch must be set before use")
        epochs = self.n_steps / self.steps_per_epoch
        factor = self.factor(epochs)
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        if self.n_steps < warmup_steps:
            factor *= (self.n_steps + 1) / warmup_steps
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factor
        self.n_steps += 1
        return factor

    @mark_as_saver
    def _save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump({"n_steps": self.n_steps}, f)

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        del end_of_epoch  # the step count is exact either way
        with open(path, encoding="utf-8") as f:
            self.n_steps = int(yaml.safe_load(f)["n_steps"])
