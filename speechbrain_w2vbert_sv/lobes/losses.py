"""Speaker classification losses.

The recipes use SpeechBrain's AAM-softmax, ``LogSoftmaxWrapper(AdditiveAngularMargin)``,
as SpeechBrain's own speaker recipes do.
"""

from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper


class AAMSoftmaxLoss(LogSoftmaxWrapper):
    """SpeechBrain's additive angular margin softmax (ArcFace) loss,
    ``LogSoftmaxWrapper(AdditiveAngularMargin(margin, scale, easy_margin))``.

    Kept (instead of a copy of SpeechBrain's formula, as earlier versions had) so that
    yamls naming ``speechbrain_w2vbert_sv.lobes.losses.AAMSoftmaxLoss`` keep loading.
    Called as SpeechBrain's recipes call ``compute_cost``: ``(predictions [B, 1, C],
    targets [B, 1], lengths)`` (lengths optional and unused).

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
    >>> import torch
    >>> cosine = torch.tensor([[[0.9, 0.1, -0.2]], [[0.0, 0.8, 0.1]]])
    >>> targets = torch.tensor([[0], [1]])
    >>> low = AAMSoftmaxLoss(margin=0.2, scale=32.0)(cosine, targets, torch.ones(2))
    >>> bool(AAMSoftmaxLoss(margin=0.5, scale=32.0)(cosine, targets) > low)
    True
    """

    def __init__(self, margin=0.2, scale=32.0, easy_margin=False):
        super().__init__(AdditiveAngularMargin(margin, scale, easy_margin))

    @property
    def margin(self):
        """The angular margin, read-only: SpeechBrain derives its constants from it
        when built (a stage with another margin builds a new loss, as stage3.yaml does),
        so an assignment, which earlier versions allowed, fails instead of doing nothing.
        """
        return self.loss_fn.margin
