"""Optimizers per parameter group, as the Brains of this package build them.

SpeechBrain clips only the first parameter group of each optimizer, so every group
with its own learning rate (backbone and head; weights, gates and multipliers when
pruning) gets an optimizer of its own.
"""


def build_optimizers(groups, checkpointer=None):
    """One optimizer per named parameter group, for the parameters that train.

    Arguments
    ---------
    groups : dict
        Name -> ``(parameters, optimizer factory)``; the factory takes a parameter
        list. A group with no trainable parameter gets no optimizer.
    checkpointer : speechbrain.utils.checkpoints.Checkpointer, optional
        Receives each optimizer as a recoverable under its name.

    Returns
    -------
    dict
        Name -> optimizer.

    Raises
    ------
    ValueError
        When no parameter trains at all.

    Example
    -------
    >>> import torch
    >>> sgd = lambda params: torch.optim.SGD(params, lr=0.1)
    >>> layer, frozen = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).requires_grad_(False)
    >>> optimizers = build_optimizers({"head_optimizer": (layer.parameters(), sgd),
    ...                                "backbone_optimizer": (frozen.parameters(), sgd)})
    >>> learning_rates(optimizers)
    {'head_lr': 0.1}
    """
    optimizers = {}
    for name, (params, opt_class) in groups.items():
        params = [p for p in params if p.requires_grad]
        if not params:
            continue
        optimizers[name] = opt_class(params)
        if checkpointer is not None:
            checkpointer.add_recoverable(name, optimizers[name])
    if not optimizers:
        raise ValueError("nothing to train: every parameter has requires_grad=False")
    return optimizers


def learning_rates(optimizers):
    """The current learning rate of each optimizer, for the training log.

    Arguments
    ---------
    optimizers : dict
        Name (``<group>_optimizer``) -> optimizer.

    Returns
    -------
    dict
        ``<group>_lr`` -> learning rate of the optimizer's first parameter group.
    """
    return {
        name.replace("optimizer", "lr"): opt.param_groups[0]["lr"]
        for name, opt in (optimizers or {}).items()
    }
