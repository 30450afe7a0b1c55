"""Small helpers shared across the package: padding masks, parameter counts."""

import torch


def lengths_to_mask(lengths, max_len):
    """Boolean mask of valid frames from relative lengths.

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths [B] in (0, 1], as SpeechBrain uses them.
    max_len : int
        Number of frames of the padded batch.

    Returns
    -------
    torch.Tensor
        Boolean mask [B, max_len], True on valid frames.

    Example
    -------
    >>> lengths_to_mask(torch.tensor([1.0, 0.5]), 4)
    tensor([[ True,  True,  True,  True],
            [ True,  True, False, False]])
    """
    # round() rather than floor(): relative lengths are ratios that float error may push
    # just below an integer number of frames.
    abs_lengths = torch.round(lengths.to(torch.float64) * max_len).clamp(min=1)
    frames = torch.arange(max_len, device=lengths.device)
    return frames[None, :] < abs_lengths.to(frames.device)[:, None]


def count_parameters(module, trainable_only=False, exclude=()):
    """Number of parameters of a module.

    Arguments
    ---------
    module : torch.nn.Module
        The module.
    trainable_only : bool
        Count only parameters that require gradients.
    exclude : sequence of str
        Parameter names left out (e.g. ``masked_spec_embed``, which inference never uses).

    Returns
    -------
    int

    Example
    -------
    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    >>> count_parameters(torch.nn.Linear(3, 2), exclude=("bias",))
    6
    """
    return sum(
        p.numel()
        for name, p in module.named_parameters()
        if (p.requires_grad or not trainable_only) and name not in exclude
    )


def check_device(device):
    """Raises a one-line ValueError when ``device`` names a GPU that torch cannot use.

    Arguments
    ---------
    device : str or None
        E.g. ``cpu``, ``cuda``, ``cuda:1`` (None: nothing to check).

    Example
    -------
    >>> check_device("cpu")
    """
    if device is None or not str(device).startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ValueError(
            f"--device {device}: torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu"
        )
    index = str(device).partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise ValueError(
            f"--device {device}: torch sees {torch.cuda.device_count()} CUDA GPU(s) "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
