"""Time in diarization: speech regions, the windows embedded in them, and segments.

Speech regions are cut into fixed windows (1.5 s every 0.75 s by default, WeSpeaker's
choice); each window gets a speaker label; :func:`labels_to_segments` turns the labelled
windows back into speaker turns, with a boundary in the middle of the overlap of two
neighbouring windows. Overlapped speech is not modelled: every instant gets one speaker.

Example
-------
>>> windows = window_times([(0.0, 3.0)], window=1.5, step=0.75)
>>> windows.tolist()
[[0.0, 1.5], [0.75, 2.25], [1.5, 3.0]]
>>> labels_to_segments(windows, [0, 0, 1])
[(0.0, 1.875, 'spk0'), (1.875, 3.0, 'spk1')]
"""

import math

import numpy as np

from speechbrain_w2vbert_sv.applications.rttm import union_regions


def merge_regions(regions, duration=None, min_duration=0.0):
    """Sorted, non-overlapping speech regions: overlapping or touching ones joined.

    Arguments
    ---------
    regions : iterable of (float, float)
        ``(start, end)`` in seconds, in any order, possibly overlapping (an RTTM's
        turns of two speakers talking at once).
    duration : float, optional
        Length of the recording: regions are cut to ``[0, duration]``.
    min_duration : float
        Regions shorter than this (after joining) are dropped.

    Returns
    -------
    list of (float, float)

    Example
    -------
    >>> merge_regions([(2.0, 3.0), (0.0, 1.0), (0.5, 1.5), (1.5, 1.6)], duration=2.5)
    [(0.0, 1.6), (2.0, 2.5)]
    """
    cut = []
    for start, end in regions:
        start, end = max(float(start), 0.0), float(end)
        if duration is not None:
            end = min(end, float(duration))
        if end > start:
            cut.append((start, end))
    merged = union_regions(cut)
    return [(s, e) for s, e in merged if e - s >= min_duration]


def window_times(regions, window=1.5, step=0.75):
    """The windows that cover each speech region.

    A region of length ``L > window`` gets ``ceil((L - window) / step) + 1`` windows
    starting every ``step`` seconds, the last one moved back to end with the region (so
    every window is full length); a shorter region is one window, the region itself.

    Arguments
    ---------
    regions : sequence of (float, float)
        Sorted, non-overlapping ``(start, end)`` in seconds (see :func:`merge_regions`).
    window : float
        Window length in seconds.
    step : float
        Hop between window starts in seconds.

    Returns
    -------
    numpy.ndarray
        ``[N, 2]`` float64 ``(start, end)`` of each window in seconds, in time order.

    Example
    -------
    >>> window_times([(1.0, 2.0), (3.0, 5.0)]).tolist()
    [[1.0, 2.0], [3.0, 4.5], [3.5, 5.0]]
    """
    if not 0 < step <= window:
        raise ValueError(f"need 0 < step <= window, got step {step} and window {window}")
    windows = []
    for start, end in regions:
        length = end - start
        if length <= window:
            windows.append((start, end))
            continue
        # A tolerance keeps float noise (e.g. 3.0000000001 - 1.5) from adding a window.
        count = math.ceil((length - window) / step - 1e-9) + 1
        for k in range(count):
            offset = min(k * step, length - window)
            windows.append((start + offset, start + offset + window))
    return np.asarray(windows, dtype=np.float64).reshape(-1, 2)


def labels_to_segments(windows, labels, prefix="spk"):
    """Speaker segments from labelled windows.

    Each window stands for the part of it nearer its own centre than its neighbours':
    where two windows overlap, the boundary is the middle of the overlap; where they do
    not (a pause between speech regions), the window keeps its own edge. Touching
    segments of one speaker are then merged.

    Arguments
    ---------
    windows : array-like
        ``[N, 2]`` ``(start, end)`` in seconds, in time order.
    labels : sequence of int
        Speaker label of each window.
    prefix : str
        Speaker names are ``prefix`` + label.

    Returns
    -------
    list of (float, float, str)
        ``(start, end, speaker)`` in time order.

    Example
    -------
    >>> labels_to_segments([[0.0, 1.5], [0.75, 2.25], [4.0, 5.0]], [1, 1, 1])
    [(0.0, 2.25, 'spk1'), (4.0, 5.0, 'spk1')]
    """
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    if len(windows) != len(labels):
        raise ValueError(f"{len(windows)} windows but {len(labels)} labels")
    segments = []
    for i, ((start, end), label) in enumerate(zip(windows, labels)):
        if i > 0 and windows[i - 1, 1] > start:
            start = 0.5 * (start + windows[i - 1, 1])
        if i + 1 < len(windows) and windows[i + 1, 0] < end:
            end = 0.5 * (windows[i + 1, 0] + end)
        speaker = f"{prefix}{int(label)}"
        if segments and segments[-1][2] == speaker and segments[-1][1] >= start - 1e-9:
            segments[-1] = (segments[-1][0], float(end), speaker)
        else:
            segments.append((float(start), float(end), speaker))
    return segments
