"""Adaptive s-norm (top-N cohort score normalisation).

The cohort statistics are computed once per utterance with a chunked matrix product
(not once per trial), and each utterance's top-N cohort scores are found among the
few above a threshold guessed from the scores' exact mean and spread (not by a full
selection over the cohort), so a Vox1-H list takes a few seconds.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from speechbrain_w2vbert_sv.scoring.cosine import (
    centre_and_normalise,
    to_float_matrix,
    trial_matrix,
)

# The threshold keeps about this many times the top-N scores per row, so that a
# row whose scores are not Gaussian rarely falls back to a full selection.
_CANDIDATE_MARGIN = 1.2
# Rows whose threshold keeps more than this many times top-N use a full selection.
_MAX_CANDIDATES = 4


def _matmul_transposed(weight, rows=None):
    """``x -> x @ weight.T`` for float32 rows, through oneDNN on the CPU.

    MKL's float32 GEMM takes its AVX2 path on AMD processors; oneDNN picks
    its kernels from the instruction set (AVX-512 where present), about twice
    as fast there, with the same float32 accuracy. Given ``rows`` (the usual
    number of rows of ``x``), the weight is reordered into oneDNN's blocked
    layout once instead of at every call, which keeps small chunks (whose
    scores stay in the cache) as fast as large ones. Builds without oneDNN,
    and other devices, use ``torch.matmul``.
    """
    weight = weight.contiguous()
    # torch's own oneDNN linear op and weight reorder (what torch.compile uses on the CPU).
    linear = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if weight.device.type == "cpu" and torch.backends.mkldnn.is_available() and linear:
        reorder = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
        if rows and reorder:
            weight = reorder(weight, rows)
        return lambda x: linear(x.contiguous(), weight, None, "none", [], "")
    weight_t = weight.T.contiguous()
    return lambda x: x @ weight_t


def _top_values(scores, top_n, threshold):
    """The ``top_n`` largest values of each row of ``scores``, in no order.

    ``threshold`` is a per-row guess at a value a little below the
    ``top_n``-th largest. Where at least ``top_n`` scores reach it they hold
    the whole top-N, so only those few are gathered (one pass over the row)
    and selected among; other rows (or rows keeping too many) use a
    selection over the whole row. Either way the values are exact.

    Arguments
    ---------
    scores : torch.Tensor
        [B, C] scores, on the CPU.
    top_n : int
        Values kept per row (at most C).
    threshold : torch.Tensor
        [B] per-row threshold guess.

    Returns
    -------
    torch.Tensor
        [B, top_n].

    Example
    -------
    >>> scores = torch.tensor([[1.0, 9.0, 5.0, 7.0], [3.0, 2.0, 8.0, 0.0]])
    >>> top = _top_values(scores, 2, torch.tensor([6.0, 9.0]))  # row 2: guess too high
    >>> top.sort(dim=1).values.tolist()
    [[7.0, 9.0], [3.0, 8.0]]
    """
    rows_n, columns = scores.shape
    # In numpy: its comparison and nonzero of the CPU scores are about 2x and 1.6x
    # faster than torch's here (the gather into the buffer a little), and release the GIL.
    values = scores.numpy()
    flat = np.flatnonzero(np.greater_equal(values, threshold.numpy()[:, None]))
    row = flat // columns
    counts = np.bincount(row, minlength=rows_n)
    gathered = (counts >= top_n) & (counts <= _MAX_CANDIDATES * top_n)
    everywhere = bool(gathered.all())
    if not everywhere:
        keep = gathered[row]
        flat, row = flat[keep], row[keep]
        counts = counts * gathered
    width = max(int(counts.max()), top_n)
    # Row r's candidates go to row r of a [B, width] buffer, in order.
    row_start = np.arange(rows_n) * width - (counts.cumsum() - counts)
    candidates = np.full((rows_n, width), -np.inf, dtype=values.dtype)
    candidates.ravel()[np.arange(flat.shape[0]) + row_start[row]] = values.ravel()[flat]
    # numpy's partition (in place, no sort) is about 5x faster than torch.topk here.
    candidates.partition(-top_n, axis=1)
    top = candidates[:, -top_n:]
    if not everywhere:
        top[~gathered] = np.partition(values[~gathered], -top_n, axis=1)[:, -top_n:]
    return torch.from_numpy(top)


def _mean_std(values):
    """Mean and standard deviation (Bessel's correction) of each row, in float64.

    Two passes over float64 copies: a few times faster than ``torch.std_mean``
    on [chunk, N] float32 rows, and a row of equal values gets exactly 0.

    Arguments
    ---------
    values : torch.Tensor
        [B, N] values, N >= 2.

    Returns
    -------
    mean : torch.Tensor
        [B] float32.
    std : torch.Tensor
        [B] float32.

    Example
    -------
    >>> mean, std = _mean_std(torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]))
    >>> mean.tolist(), std.tolist()
    ([2.0, 0.5], [1.0, 0.0])
    """
    values = values.double()
    mean = values.mean(1)
    variance = (values - mean.unsqueeze(1)).square_().sum(1) / (values.shape[1] - 1)
    return mean.float(), variance.sqrt_().float()


def _in_streams(work, parts):
    """Runs ``work(part)`` for every part at once, each in a thread of its own
    with one torch thread.

    The chunks of ``cohort_statistics`` are independent: run as one stream on a
    team of threads, each of the dozen operations per chunk would wait for the
    whole team, which on a busy machine costs more than the work itself.
    """
    threads = torch.get_num_threads()

    def run(part):
        torch.set_num_threads(1)
        work(part)

    try:
        with ThreadPoolExecutor(len(parts)) as pool:
            list(pool.map(run, parts))  # list() re-raises a worker's exception
    finally:
        torch.set_num_threads(threads)  # MKL's thread count is process-wide


def cohort_statistics(embeddings, cohort, top_n=300, mean=None, chunk_size=1024):
    """Mean and standard deviation of each utterance's top-N cohort scores.

    Each utterance is scored against the whole cohort by a matrix product
    ([chunk, D] x [D, C], chunked over utterances so that only [chunk, C] of
    them ever exist), and the ``top_n`` highest
    cosine scores give its statistics. On the CPU the top-N is found without
    a full selection over C: the scores' own mean and spread (exact, from the
    cohort's mean and second moment) give a threshold a little below the
    N-th score, only the scores above it are gathered and selected among, and
    rows where the guess fails get the full selection, so the values are
    exactly those of ``torch.topk``. The standard deviation uses Bessel's
    correction (as ``torch.std``).

    Arguments
    ---------
    embeddings : numpy.ndarray or torch.Tensor or dict
        [U, D] utterance embeddings (a dict is taken in its order).
    cohort : numpy.ndarray or torch.Tensor or dict
        [C, D] cohort embeddings (e.g. one per training speaker or utterance).
    top_n : int
        Number of closest cohort scores kept (adaptive s-norm); capped at C.
    mean : torch.Tensor, optional
        [D] mean embedding subtracted from both sides before the cosine.
    chunk_size : int
        Utterances scored per matrix product (1024: a few percent less CPU
        time than 512 on a Vox1-H list, from fewer small steps). On the CPU the chunks are
        shared among ``torch.get_num_threads()`` threads, each taking the next
        chunk when free and working on it single-threaded.

    Returns
    -------
    mean_scores : torch.Tensor
        [U] float32.
    std_scores : torch.Tensor
        [U] float32.

    Example
    -------
    >>> mu, sd = cohort_statistics(torch.randn(5, 8), torch.randn(20, 8), top_n=4)
    >>> mu.shape, bool((sd > 0).all())
    (torch.Size([5]), True)
    """
    utterances = centre_and_normalise(to_float_matrix(embeddings, "embeddings"), mean)
    cohort = centre_and_normalise(to_float_matrix(cohort, "cohort"), mean)
    if cohort.shape[1] != utterances.shape[1]:
        raise ValueError(
            f"cohort has {cohort.shape[1]} dimensions, embeddings have {utterances.shape[1]}"
        )
    top_n = min(int(top_n), cohort.shape[0])
    if top_n < 2:
        raise ValueError(
            f"adaptive s-norm needs at least 2 cohort scores, got top_n={top_n} "
            f"with a cohort of {cohort.shape[0]}"
        )
    cohort_scores = _matmul_transposed(cohort, rows=min(chunk_size, utterances.shape[0]))
    kept = _CANDIDATE_MARGIN * top_n / cohort.shape[0]
    threshold_guess = utterances.device.type == "cpu" and kept < 0.25
    if threshold_guess:
        # Rows of [mean; second moment] of the cohort: the mean and variance of
        # an utterance's C scores from one small product.
        moments = _matmul_transposed(
            torch.cat([cohort.mean(0, keepdim=True), cohort.T @ cohort / cohort.shape[0]]),
            rows=min(chunk_size, utterances.shape[0]),
        )
        z = float(torch.special.ndtri(torch.tensor(1.0 - kept, dtype=torch.float64)))
    mean_scores = torch.empty(utterances.shape[0])
    std_scores = torch.empty(utterances.shape[0])

    def statistics_of(starts):
        for start in starts:
            chunk = utterances[start : start + chunk_size]
            scores = cohort_scores(chunk)
            if threshold_guess:
                score_moments = moments(chunk)
                score_mean = score_moments[:, 0]
                score_var = (score_moments[:, 1:] * chunk).sum(1) - score_mean**2
                threshold = score_mean + z * score_var.clamp_min(0).sqrt()
                top = _top_values(scores, top_n, threshold)
            else:
                top = scores.topk(top_n, dim=1, sorted=False).values
            mean_, std = _mean_std(top)
            mean_scores[start : start + chunk_size] = mean_
            std_scores[start : start + chunk_size] = std

    starts = range(0, utterances.shape[0], chunk_size)
    streams = min(torch.get_num_threads(), len(starts))
    if utterances.device.type == "cpu" and streams > 1:
        # One shared iterator: a stream takes the next chunk when it is free, so a core
        # slowed by other processes does fewer chunks instead of holding the rest back.
        shared = iter(starts)
        _in_streams(statistics_of, [shared] * streams)
    else:
        statistics_of(starts)
    flat = int((std_scores == 0).sum())
    if flat:
        raise ValueError(
            f"the top-{top_n} cohort scores of {flat} utterance(s) are all equal "
            "(zero spread): the cohort needs distinct embeddings"
        )
    return mean_scores, std_scores


def snorm(scores, enroll_index, test_index, mean_scores, std_scores):
    """Symmetric normalisation of trial scores with per-utterance statistics.

    ``0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)``.

    Arguments
    ---------
    scores : torch.Tensor
        [T] raw trial scores.
    enroll_index : array-like
        [T] row of each trial's enrollment utterance in the statistics.
    test_index : array-like
        [T] row of each trial's test utterance.
    mean_scores : torch.Tensor
        [U] cohort score means (see ``cohort_statistics``).
    std_scores : torch.Tensor
        [U] cohort score standard deviations.

    Returns
    -------
    torch.Tensor
        [T] normalised scores.

    Example
    -------
    >>> snorm(torch.tensor([1.0]), [0], [1], torch.tensor([0.0, 0.5]),
    ...       torch.tensor([1.0, 0.5])).tolist()
    [1.0]
    """
    scores = torch.as_tensor(scores)
    enroll_index = torch.as_tensor(enroll_index, dtype=torch.long)
    test_index = torch.as_tensor(test_index, dtype=torch.long)
    z_enroll = (scores - mean_scores[enroll_index]) / std_scores[enroll_index]
    z_test = (scores - mean_scores[test_index]) / std_scores[test_index]
    return 0.5 * (z_enroll + z_test)


def adaptive_snorm(
    scores,
    trials,
    embeddings,
    cohort,
    ids=None,
    mean=None,
    top_n=300,
    chunk_size=1024,
    return_statistics=False,
):
    """Adaptive s-norm of a scored trial list (top-N cohort per utterance).

    The cohort statistics are computed once per distinct utterance of the
    list, then every trial is normalised with those of its two utterances.

    Arguments
    ---------
    scores : torch.Tensor
        [T] cosine scores of ``trials`` (see ``cosine_scores``).
    trials : Trials
        The trial list.
    embeddings : dict or numpy.ndarray or torch.Tensor
        The embedding table (see ``embedding_matrix``).
    cohort : dict or numpy.ndarray or torch.Tensor
        [C, D] cohort embeddings, disjoint from the evaluation speakers.
    ids : sequence of str, optional
        Row names when ``embeddings`` is a matrix.
    mean : torch.Tensor, optional
        The mean embedding used for the scores (applied to the cohort too).
    top_n : int
        Cohort scores kept per utterance (300 by default).
    chunk_size : int
        Utterances per cohort matrix product.
    return_statistics : bool
        Also return the [U] cohort means and standard deviations (aligned
        with ``trials.utterances``), e.g. as QMF quality measures.

    Returns
    -------
    torch.Tensor
        [T] normalised scores (and ``(mean_scores, std_scores)`` when
        ``return_statistics``).

    Example
    -------
    >>> from speechbrain_w2vbert_sv.scoring.cosine import cosine_scores
    >>> from speechbrain_w2vbert_sv.scoring.trials import Trials
    >>> trials = Trials.from_lists([1, 0], ["a", "a"], ["b", "c"])
    >>> table = {k: torch.randn(8) for k in "abc"}
    >>> raw = cosine_scores(trials, table)
    >>> adaptive_snorm(raw, trials, table, torch.randn(30, 8), top_n=10).shape
    torch.Size([2])
    """
    scores = torch.as_tensor(scores)
    if scores.shape != (len(trials),):
        raise ValueError(
            f"scores has shape {tuple(scores.shape)}, expected one score per "
            f"trial of {trials.source} ({len(trials)})"
        )
    matrix = trial_matrix(trials, embeddings, ids)
    mean_scores, std_scores = cohort_statistics(
        matrix, cohort, top_n=top_n, mean=mean, chunk_size=chunk_size
    )
    normalised = snorm(scores, trials.enroll_index, trials.test_index, mean_scores, std_scores)
    if return_statistics:
        return normalised, (mean_scores, std_scores)
    return normalised
