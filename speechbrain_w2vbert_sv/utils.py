"""Small helpers shared by the lobes."""

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
