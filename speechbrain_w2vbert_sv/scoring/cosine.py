"""Cosine scoring of whole trial lists.

Utterances are embedded and normalised once, and trials are scored by gathering rows of
an utterance matrix in chunks.
"""

from collections.abc import Mapping

import torch


def to_float_matrix(values, name):
    """A float32 [N, D] tensor from an array, tensor or dict of vectors."""
    if isinstance(values, Mapping):
        if not values:
            raise ValueError(f"{name} is empty")
        values = [torch.as_tensor(v).reshape(-1) for v in values.values()]
        matrix = torch.stack(values)
    else:
        matrix = torch.as_tensor(values)
        if matrix.dim() == 3 and matrix.shape[1] == 1:
            matrix = matrix.squeeze(1)  # SpeechBrain's [N, 1, D] embeddings
    if matrix.dim() != 2 or matrix.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty [N, D] matrix, got shape {tuple(matrix.shape)}"
        )
    return matrix.float()


def embedding_matrix(embeddings, keys, ids=None):
    """Rows of an embedding table for the given utterance ids, in order.

    Arguments
    ---------
    embeddings : dict or numpy.ndarray or torch.Tensor
        Either a dict ``id -> vector`` (vectors of any shape holding D values,
        e.g. SpeechBrain's [1, D]) or an [N, D] matrix whose rows are named
        by ``ids``.
    keys : sequence of str
        The utterances wanted (e.g. ``trials.utterances``).
    ids : sequence of str, optional
        Row names of a matrix ``embeddings``; not used with a dict.

    Returns
    -------
    torch.Tensor
        [len(keys), D] float32.

    Example
    -------
    >>> table = {"a": torch.ones(1, 2), "b": torch.zeros(1, 2)}
    >>> embedding_matrix(table, ["b", "a"]).tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    >>> embedding_matrix(torch.eye(2), ["y"], ids=["x", "y"]).tolist()
    [[0.0, 1.0]]
    """
    if isinstance(embeddings, Mapping):
        if ids is not None:
            raise ValueError("ids must not be given with a dict of embeddings")
        missing = [k for k in keys if k not in embeddings]
        if missing:
            raise ValueError(missing_message(missing))
        return to_float_matrix({k: embeddings[k] for k in keys}, "embeddings")
    matrix = to_float_matrix(embeddings, "embeddings")
    if ids is None:
        raise ValueError("ids (one per row) are required with an embedding matrix")
    if len(ids) != matrix.shape[0]:
        raise ValueError(f"embedding matrix has {matrix.shape[0]} rows but {len(ids)} ids")
    row = {utt: i for i, utt in enumerate(ids)}
    index = torch.as_tensor([row.get(k, -1) for k in keys], dtype=torch.long)
    if bool((index < 0).any()):  # one dict pass for the lookup and the check
        raise ValueError(missing_message([k for k in keys if k not in row]))
    return matrix[index]


def trial_matrix(trials, embeddings, ids=None):
    """Rows of an embedding table for ``trials.utterances``, enrollment models included.

    A multi-utterance model (``trials.enrollments``) is the mean of its utterances'
    raw embeddings, as WeSpeaker's CN-Celeb recipe averages ``enroll.map`` before
    its mean subtraction and cosine: centring commutes with the mean, and the
    length normalisation of every row comes after (:func:`centre_and_normalise`).
    A model id the table already holds (e.g. a matrix this function returned) is
    taken as is.

    Arguments
    ---------
    trials : Trials
        The trial list.
    embeddings : dict or numpy.ndarray or torch.Tensor
        The embedding table of its utterances or audio files (see
        ``embedding_matrix``).
    ids : sequence of str, optional
        Row names when ``embeddings`` is a matrix.

    Returns
    -------
    torch.Tensor
        [len(trials.utterances), D] float32.

    Example
    -------
    >>> from speechbrain_w2vbert_sv.scoring.trials import Trials
    >>> trials = Trials.from_lists([1], ["m"], ["c"], enrollments={"m": ["a", "b"]})
    >>> table = {"a": [1.0, 0.0], "b": [0.0, 3.0], "c": [2.0, 2.0]}
    >>> trial_matrix(trials, table).tolist()
    [[2.0, 2.0], [0.5, 1.5]]
    """
    keys = trials.utterances
    if not trials.enrollments:
        return embedding_matrix(embeddings, keys, ids)
    held = set(embeddings) if isinstance(embeddings, Mapping) else set(ids or ())
    models = [k for k in keys if k in trials.enrollments and k not in held]
    if not models:
        return embedding_matrix(embeddings, keys, ids)
    members = [f for m in models for f in trials.enrollments[m]]
    owner = torch.as_tensor([i for i, m in enumerate(models) for _ in trials.enrollments[m]])
    member_rows = embedding_matrix(embeddings, members, ids)
    sums = torch.zeros(len(models), member_rows.shape[1]).index_add_(0, owner, member_rows)
    model_rows = sums / torch.bincount(owner, minlength=len(models))[:, None]
    direct = [k for k in keys if k not in models]
    rows = dict(zip(models, model_rows))
    if direct:
        rows.update(zip(direct, embedding_matrix(embeddings, direct, ids)))
    return torch.stack([rows[k] for k in keys])


def missing_message(missing, what="embedding"):
    shown = ", ".join(repr(k) for k in missing[:3])
    return f"{len(missing)} utterance(s) have no {what}, e.g. {shown}"


def mean_embedding(embeddings):
    """The mean of a set of embeddings (e.g. a training or cohort set).

    Arguments
    ---------
    embeddings : dict or numpy.ndarray or torch.Tensor
        A dict ``id -> vector`` or an [N, D] matrix.

    Returns
    -------
    torch.Tensor
        [D] float32.

    Example
    -------
    >>> mean_embedding(torch.tensor([[1.0, 0.0], [3.0, 2.0]])).tolist()
    [2.0, 1.0]
    """
    return to_float_matrix(embeddings, "embeddings").mean(dim=0)


def centre_and_normalise(matrix, mean):
    """Subtracts the mean embedding (if any) and projects to the unit sphere."""
    if mean is not None:
        mean = torch.as_tensor(mean, dtype=matrix.dtype).reshape(-1)
        if mean.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"mean has {mean.shape[0]} values, embeddings have {matrix.shape[1]} dimensions"
            )
        matrix = matrix - mean
    return torch.nn.functional.normalize(matrix, dim=1)


def _gather_dot(normalised, first, second, chunk_size):
    """Dot products of rows ``first[i]`` and ``second[i]``, chunked over trials."""
    first = torch.as_tensor(first, dtype=torch.long)
    second = torch.as_tensor(second, dtype=torch.long)
    out = torch.empty(first.shape[0], dtype=normalised.dtype)
    for start in range(0, first.shape[0], chunk_size):
        stop = start + chunk_size
        rows_a = normalised.index_select(0, first[start:stop])
        rows_b = normalised.index_select(0, second[start:stop])
        # One dot product per row pair, without a [chunk, D] product in memory.
        out[start:stop] = torch.bmm(rows_a.unsqueeze(1), rows_b.unsqueeze(2)).view(-1)
    return out


def cosine_scores(trials, embeddings, ids=None, mean=None, chunk_size=8192):
    """Cosine similarity of every trial.

    Arguments
    ---------
    trials : Trials
        The trial list.
    embeddings : dict or numpy.ndarray or torch.Tensor
        The embedding table (see ``embedding_matrix``; enrollment models are
        averaged by ``trial_matrix``).
    ids : sequence of str, optional
        Row names when ``embeddings`` is a matrix.
    mean : torch.Tensor, optional
        [D] mean embedding subtracted before the cosine (see
        ``mean_embedding``); None to score the raw embeddings.
    chunk_size : int
        Trials scored per step (bounds the memory of the gathered rows).

    Returns
    -------
    torch.Tensor
        [T] float32 scores in [-1, 1].

    Example
    -------
    >>> from speechbrain_w2vbert_sv.scoring.trials import Trials
    >>> trials = Trials.from_lists([1, 0], ["a", "a"], ["b", "c"])
    >>> table = {"a": [1.0, 0.0], "b": [2.0, 0.0], "c": [0.0, 3.0]}
    >>> cosine_scores(trials, table).tolist()
    [1.0, 0.0]
    """
    matrix = trial_matrix(trials, embeddings, ids)
    normalised = centre_and_normalise(matrix, mean)
    return _gather_dot(normalised, trials.enroll_index, trials.test_index, chunk_size)
