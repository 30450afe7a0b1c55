"""Hard-concrete (L0) gates and the Lagrangian sparsity controller.

Hard-concrete gates follow Louizos et al., "Learning Sparse Neural Networks
through L0 Regularization" (2018): a binary-concrete sample stretched to
``(left, right)`` and clamped to [0, 1], so that a gate is exactly 0 or 1 with
non-zero probability while staying differentiable in its ``log_alpha``.
"""

import math

import torch
from torch import nn

# |log_alpha| used for gates that must be exactly 0 or 1 (see
# ``set_deterministic_values``): the probability of the opposite outcome is
# then below 1e-8.
_SATURATED_LOG_ALPHA = 20.0


class HardConcreteGates(nn.Module):
    """A vector of hard-concrete gates.

    Arguments
    ---------
    num_gates : int
        Number of gates (0 is allowed: an empty gate vector).
    init_drop_rate : float
        Initial drop rate p in (0, 1), in Louizos et al.'s parametrisation:
        ``log_alpha`` starts at ``log((1 - p) / p)`` (plus ``init_std`` noise),
        so that ``sigmoid(log_alpha) = 1 - p``.
    temperature : float
        Temperature (beta) of the binary concrete distribution.
    stretch : tuple of two floats
        Interval ``(left, right)`` with ``left < 0`` and ``right > 1`` to which
        samples are stretched before clamping.
    init_std : float
        Standard deviation of the Gaussian noise added to the initial
        ``log_alpha`` (breaks ties between otherwise identical gates).

    Example
    -------
    >>> gates = HardConcreteGates(4, init_drop_rate=0.01)
    >>> gates.train()().shape
    torch.Size([4])
    >>> gates.eval()()
    tensor([1., 1., 1., 1.], grad_fn=<ClampBackward1>)
    >>> gates.set_deterministic_values(torch.tensor([0.0, 0.25, 1.0, 0.0]))
    >>> gates.deterministic()
    tensor([0.0000, 0.2500, 1.0000, 0.0000], grad_fn=<ClampBackward1>)
    >>> gates.prob_nonzero().sum() < 3
    tensor(True)
    """

    def __init__(
        self,
        num_gates,
        init_drop_rate=0.5,
        temperature=2.0 / 3.0,
        stretch=(-0.1, 1.1),
        init_std=0.01,
    ):
        super().__init__()
        if int(num_gates) != num_gates or num_gates < 0:
            raise ValueError(f"num_gates must be a non-negative integer, got {num_gates!r}")
        if not 0.0 < init_drop_rate < 1.0:
            raise ValueError(f"init_drop_rate must lie in (0, 1), got {init_drop_rate!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        left, right = (float(s) for s in stretch)
        if not (left < 0.0 and right > 1.0):
            raise ValueError(f"stretch must be (left < 0, right > 1), got {tuple(stretch)!r}")
        self.temperature = float(temperature)
        self.left = left
        self.right = right
        mean = math.log(1.0 - init_drop_rate) - math.log(init_drop_rate)
        self.log_alpha = nn.Parameter(torch.empty(int(num_gates)).normal_(mean, init_std))

    def __len__(self):
        return self.log_alpha.numel()

    def forward(self):
        """Random gate values in training mode, deterministic ones in eval.

        Returns
        -------
        torch.Tensor
            Gate values in [0, 1], shape ``[num_gates]``.
        """
        return self.sample() if self.training else self.deterministic()

    def sample(self):
        """Draws one hard-concrete sample per gate (reparameterised).

        Returns
        -------
        torch.Tensor
            Values in [0, 1] with exact zeros and ones, shape ``[num_gates]``.
        """
        eps = torch.finfo(self.log_alpha.dtype).eps
        u = torch.rand_like(self.log_alpha).clamp(eps, 1.0 - eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.temperature)
        return (s * (self.right - self.left) + self.left).clamp(0.0, 1.0)

    def deterministic(self):
        """The standard test-time estimate ``clamp(sigmoid(log_alpha) *
        (right - left) + left, 0, 1)``, with exact zeros and ones.

        Returns
        -------
        torch.Tensor
            Shape ``[num_gates]``.
        """
        s = torch.sigmoid(self.log_alpha)
        return (s * (self.right - self.left) + self.left).clamp(0.0, 1.0)

    def prob_nonzero(self):
        """Probability that each gate is non-zero (differentiable):
        ``sigmoid(log_alpha - temperature * log(-left / right))``.

        Returns
        -------
        torch.Tensor
            Shape ``[num_gates]``.
        """
        shift = self.temperature * math.log(-self.left / self.right)
        return torch.sigmoid(self.log_alpha - shift)

    @torch.no_grad()
    def set_deterministic_values(self, values):
        """Sets ``log_alpha`` so that ``deterministic()`` returns ``values``.

        Values <= 0 give exact zeros and values >= 1 exact ones, both with a
        saturated ``log_alpha`` so that sampling agrees with them.

        Arguments
        ---------
        values : torch.Tensor
            Target gate values, shape ``[num_gates]``.
        """
        values = torch.as_tensor(values, dtype=self.log_alpha.dtype)
        if values.shape != self.log_alpha.shape:
            raise ValueError(
                f"values must have shape {tuple(self.log_alpha.shape)}, got {tuple(values.shape)}"
            )
        s = ((values - self.left) / (self.right - self.left)).clamp(1e-6, 1 - 1e-6)
        log_alpha = torch.logit(s)
        log_alpha[values <= 0] = -_SATURATED_LOG_ALPHA
        log_alpha[values >= 1] = _SATURATED_LOG_ALPHA
        self.log_alpha.copy_(log_alpha.to(self.log_alpha.device))

    def extra_repr(self):
        return (
            f"num_gates={len(self)}, temperature={self.temperature:.4g}, "
            f"stretch=({self.left}, {self.right})"
        )


class LagrangianSparsityController(nn.Module):
    """Lagrangian term that drives an expected sparsity to a target.

    The target ramps linearly from 0 to ``target_sparsity`` over
    ``warmup_steps`` steps and stays there. The term is
    ``lambda1 * (s - t) + lambda2 * (s - t) ** 2``. The gates minimise it and
    the multipliers maximise it: the forward passes ``lambda1``/``lambda2``
    through a gradient reversal (value unchanged, gradient negated), so their
    optimizer (any torch optimizer, plain positive learning rate) performs
    gradient ascent while the same term is simply added to the loss that
    everything else minimises. Give the multipliers an optimizer of their own
    (``self.parameters()``).

    Arguments
    ---------
    target_sparsity : float
        Final target in [0, 1).
    warmup_steps : int
        Number of steps of the linear ramp (0: the target from the start).

    Example
    -------
    >>> ctrl = LagrangianSparsityController(target_sparsity=0.8, warmup_steps=10)
    >>> ctrl.target(5)
    0.4
    >>> s = torch.tensor(0.3, requires_grad=True)
    >>> with torch.no_grad():
    ...     _ = ctrl.lambda1.fill_(1.0)
    >>> term = ctrl(s, step=5)
    >>> term.backward()
    >>> round(s.grad.item(), 4), round(ctrl.lambda1.grad.item(), 4)
    (1.0, 0.1)
    """

    def __init__(self, target_sparsity=0.8, warmup_steps=10000):
        super().__init__()
        if not 0.0 <= target_sparsity < 1.0:
            raise ValueError(f"target_sparsity must lie in [0, 1), got {target_sparsity!r}")
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        self.target_sparsity = float(target_sparsity)
        self.warmup_steps = int(warmup_steps)
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def target(self, step):
        """Target sparsity at optimisation step ``step`` (0-based)."""
        if self.warmup_steps == 0:
            return self.target_sparsity
        return self.target_sparsity * min(step / self.warmup_steps, 1.0)

    def forward(self, expected_sparsity, step):
        """Lagrangian term for the current expected sparsity.

        Arguments
        ---------
        expected_sparsity : torch.Tensor
            Scalar, differentiable in the gates.
        step : int
            Current optimisation step (sets the target).

        Returns
        -------
        torch.Tensor
            Scalar term to add to the loss.
        """
        gap = expected_sparsity - self.target(step)
        # Gradient reversal: same value, negated gradient for the multipliers.
        lambda1 = 2 * self.lambda1.detach() - self.lambda1
        lambda2 = 2 * self.lambda2.detach() - self.lambda2
        return lambda1 * gap + lambda2 * gap**2

    def extra_repr(self):
        return f"target_sparsity={self.target_sparsity}, warmup_steps={self.warmup_steps}"
