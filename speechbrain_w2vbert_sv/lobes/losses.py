"""Speaker classification losses."""

import math

import torch


class AAMSoftmaxLoss(torch.nn.Module):
    """Additive angular margin softmax (ArcFace) loss on cosine logits.

    Unlike SpeechBrain's `AdditiveAngularMargin`, whose margin constants are fixed at
    construction, the margin here can be changed between training stages (`margin`
    attribute), e.g. 0.2 for stages 1-2 and 0.5 for large-margin fine-tuning.

    Arguments
    ---------
    margin : float
        Angular margin m added to the target angle.
    scale : float
        Logit scale s.
    easy_margin : bool
        Apply the margin only where the target cosine is positive.

    Example
    -------
    >>> loss = AAMSoftmaxLoss(margin=0.2, scale=32.0)
    >>> cosine = torch.tensor([[[0.9, 0.1, -0.2]], [[0.0, 0.8, 0.1]]])
    >>> targets = torch.tensor([[0], [1]])
    >>> low = loss(cosine, targets)
    >>> loss.margin = 0.5
    >>> bool(loss(cosine, targets) > low)
    True
    """

    def __init__(self, margin=0.2, scale=32.0, easy_margin=False):
        super().__init__()
        self.margin = margin
        self.scale = scale
        self.easy_margin = easy_margin

    def logits(self, cosine, targets):
        """Scaled logits with the margin applied to each target class.

        Arguments
        ---------
        cosine : torch.Tensor
            Cosine similarities [B, C] or [B, 1, C].
        targets : torch.Tensor
            Class indices [B] or [B, 1].

        Returns
        -------
        torch.Tensor
            Logits [B, C].
        """
        cosine = cosine.reshape(cosine.shape[0], -1).float()
        targets = targets.reshape(-1).long()
        cosine = cosine.clamp(-1 + 1e-7, 1 - 1e-7)
        target_cos = cosine.gather(1, targets[:, None])
        sine = torch.sqrt(1.0 - target_cos.pow(2))
        phi = target_cos * math.cos(self.margin) - sine * math.sin(self.margin)
        if self.easy_margin:
            phi = torch.where(target_cos > 0, phi, target_cos)
        else:
            # Past theta = pi - m, cos(theta + m) stops decreasing: use a linear extension.
            threshold = math.cos(math.pi - self.margin)
            extension = math.sin(math.pi - self.margin) * self.margin
            phi = torch.where(target_cos > threshold, phi, target_cos - extension)
        logits = cosine.scatter(1, targets[:, None], phi)
        return self.scale * logits

    def forward(self, cosine, targets):
        """Mean cross-entropy of the margin logits.

        Arguments
        ---------
        cosine : torch.Tensor
            Cosine similarities [B, C] or [B, 1, C].
        targets : torch.Tensor
            Class indices [B] or [B, 1].

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        return torch.nn.functional.cross_entropy(
            self.logits(cosine, targets), targets.reshape(-1).long()
        )
