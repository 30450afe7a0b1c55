"""Adaptive s-norm (top-N cohort score normalisation).

The cohort statistics are computed once per utterance with a chunked matrix product
(not once per trial), so Vox1-E/H lists take seconds.
"""


import torch

from speechbrain_w2vbert_sv.scoring.cosine import (
    centre_and_normalise,
    embedding_matrix,
    to_float_matrix,
)


def cohort_statistics(embeddings, cohort, top_n=300, mean=None, chunk_size=1024):
    """Mean and standard deviation of each utterance's top-N cohort scores.

    Each utterance is scored against the whole cohort by a matrix product
    ([chunk, D] x [D, C], chunked over utterances to bound memory), and the
    ``top_n`` highest cosine scores give its statistics. The standard
    deviation uses Bessel's correction (as ``torch.std``).

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
        Utterances scored per matrix product.

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
            f"cohort has {cohort.shape[1]} dimensions, embeddings have "
            f"{utterances.shape[1]}"
        )
    top_n = min(int(top_n), cohort.shape[0])
    if top_n < 2:
        raise ValueError(
            f"adaptive s-norm needs at least 2 cohort scores, got top_n={top_n} "
            f"with a cohort of {cohort.shape[0]}"
        )
    cohort_t = cohort.T.contiguous()
    mean_scores = torch.empty(utterances.shape[0])
    std_scores = torch.empty(utterances.shape[0])
    for start in range(0, utterances.shape[0], chunk_size):
        scores = utterances[start : start + chunk_size] @ cohort_t
        # Order within the top-N does not matter for mean and std.
        top = scores.topk(top_n, dim=1, sorted=False).values
        std, mean_ = torch.std_mean(top, dim=1)
        mean_scores[start : start + chunk_size] = mean_
        std_scores[start : start + chunk_size] = std
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
    matrix = embedding_matrix(embeddings, trials.utterances, ids)
    mean_scores, std_scores = cohort_statistics(
        matrix, cohort, top_n=top_n, mean=mean, chunk_size=chunk_size
    )
    normalised = snorm(
        scores, trials.enroll_index, trials.test_index, mean_scores, std_scores
    )
    if return_statistics:
        return normalised, (mean_scores, std_scores)
    return normalised
