"""Clustering speaker embeddings: spectral with the eigengap, or agglomerative.

Spectral clustering runs the steps of SpeechBrain's ``Spec_Clust_unorm`` (its AMI
recipe's): pruned cosine affinity, unnormalised Laplacian, the number of speakers at the
largest eigengap. Its count starts at two speakers; one speaker is decided here from the
similarity of the cluster centroids. (With one speaker allowed in the eigengap, as in
WeSpeaker's clusterer, it answered one speaker for most 3-4 speaker conversations of a
small model; SpeechBrain's pruning was also better than keeping a fixed number of
neighbours.) Agglomerative clustering is scikit-learn's, with average linkage on cosine
distances stopped at a similarity threshold.

Example
-------
>>> rng = np.random.default_rng(0)
>>> centres = rng.standard_normal((3, 16))
>>> embeddings = np.repeat(centres, 10, axis=0) + 0.1 * rng.standard_normal((30, 16))
>>> labels = cluster(embeddings)
>>> len(set(labels)), len(set(labels[:10])), len(set(labels[10:20])), len(set(labels[20:]))
(3, 1, 1, 1)
"""

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans

METHODS = ("spectral", "agglomerative")
# Largest count the eigengap considers when no max_speakers is given (SpeechBrain's).
DEFAULT_MAX_SPEAKERS = 10


def _normalized(embeddings):
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, E], got shape {embeddings.shape}")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def _count_range(num_items, num_speakers, min_speakers, max_speakers):
    """The admissible speaker counts ``(low, high)``, within ``[1, num_items]``."""
    if num_speakers is not None:
        if num_speakers < 1:
            raise ValueError(f"num_speakers must be >= 1, got {num_speakers}")
        count = min(int(num_speakers), num_items)
        return count, count
    high = DEFAULT_MAX_SPEAKERS if max_speakers is None else int(max_speakers)
    if min_speakers < 1 or high < min_speakers:
        raise ValueError(
            f"need 1 <= min_speakers <= max_speakers, got {min_speakers} and {max_speakers}"
        )
    return min(int(min_speakers), num_items), min(high, num_items)


def _one_speaker(x, labels, threshold):
    """Whether clusters of normalised embeddings are all one speaker: every pair of
    cluster centroids more similar than ``threshold``."""
    centroids = _normalized([x[labels == k].mean(axis=0) for k in np.unique(labels)])
    similarity = centroids @ centroids.T
    return bool((similarity[np.triu_indices(len(centroids), 1)] > threshold).all())


def spectral_clustering(
    embeddings,
    num_speakers=None,
    min_speakers=1,
    max_speakers=None,
    threshold=None,
    p_value=0.3,
    min_neighbors=3,
    seed=0,
):
    """Spectral clustering with the number of speakers from the eigengap.

    The steps are SpeechBrain's ``Spec_Clust_unorm`` (AMI recipe): cosine affinity, each
    row pruned to its ``p_value`` most similar entries, symmetrised, unnormalised
    Laplacian, the count at the largest eigengap from two speakers on, k-means on the
    spectral embeddings (seeded here: SpeechBrain's k-means is not). One speaker is the
    answer when ``min_speakers`` allows it and every two clusters' centroids are more
    similar than ``threshold``.

    Arguments
    ---------
    embeddings : array-like
        ``[N, E]`` speaker embeddings.
    num_speakers : int, optional
        Known number of speakers (no estimate).
    min_speakers, max_speakers : int
        Bounds of the estimate (``max_speakers`` None: 10).
    threshold : float, optional
        Cosine similarity of cluster centroids above which all is one speaker (None:
        at least two speakers unless ``max_speakers`` is 1).
    p_value : float
        Fraction of each affinity row kept (SpeechBrain's AMI recipe tunes it on a dev
        set; of 0.1, 0.2 and 0.3, 0.3 did best on simulated ASC conversations).
    min_neighbors : int
        Fewest neighbours a row keeps besides itself (short recordings).
    seed : int
        Seed of k-means (results are reproducible).

    Returns
    -------
    numpy.ndarray
        ``[N]`` int labels.

    Example
    -------
    >>> x = [[1.0, 0.0], [0.9, 0.1], [0.95, 0.0], [0.0, 1.0], [0.1, 0.9], [0.0, 0.8]]
    >>> labels = spectral_clustering(x)
    >>> len(set(labels[:3])), len(set(labels[3:])), bool(labels[0] != labels[3])
    (1, 1, True)
    >>> spectral_clustering(x, threshold=-0.5).tolist()  # centroids "similar": one speaker
    [0, 0, 0, 0, 0, 0]
    """
    from speechbrain.integrations.alignment.diarization import Spec_Clust_unorm

    x = _normalized(embeddings)
    n = len(x)
    low, high = _count_range(n, num_speakers, min_speakers, max_speakers)
    if high <= 1:
        return np.zeros(n, dtype=np.int64)
    # Its eigengap ranges over counts 2 .. max_num_spkrs - 1.
    steps = Spec_Clust_unorm(min_num_spkrs=max(2, low), max_num_spkrs=high + 1)
    # p_pruning zeroes int((1 - p) N) entries per row: keep the row itself and neighbours.
    p_value = max(p_value, (min(min_neighbors, n - 1) + 1) / n)
    affinity = steps.p_pruning(steps.get_sim_mat(x), p_value)
    laplacian = steps.get_laplacian(0.5 * (affinity + affinity.T))
    spectral, count = steps.get_spec_embs(laplacian, low if low == high else None)
    labels = KMeans(n_clusters=count, n_init=10, random_state=seed).fit_predict(spectral)
    if low <= 1 and threshold is not None and _one_speaker(x, labels, threshold):
        return np.zeros(n, dtype=np.int64)
    return labels.astype(np.int64)


def agglomerative_clustering(
    embeddings, threshold=None, num_speakers=None, min_speakers=1, max_speakers=None
):
    """Average-linkage agglomerative clustering on cosine distances.

    Clusters merge while their average cosine similarity is above ``threshold``; a count
    outside ``[min_speakers, max_speakers]`` is cut to the nearest bound.

    Arguments
    ---------
    embeddings : array-like
        ``[N, E]`` speaker embeddings.
    threshold : float, optional
        Cosine-similarity threshold (needed unless ``num_speakers`` is given).
    num_speakers : int, optional
        Known number of speakers.
    min_speakers, max_speakers : int
        Bounds on the number of speakers (``max_speakers`` None: no bound).

    Returns
    -------
    numpy.ndarray
        ``[N]`` int labels.

    Example
    -------
    >>> agglomerative_clustering([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], threshold=0.5).tolist()
    [0, 0, 1]
    """
    x = _normalized(embeddings)
    n = len(x)
    if max_speakers is None and num_speakers is None:
        max_speakers = n
    low, high = _count_range(n, num_speakers, min_speakers, max_speakers)
    if n == 1:
        return np.zeros(1, dtype=np.int64)

    def fit(**kwargs):
        model = AgglomerativeClustering(metric="cosine", linkage="average", **kwargs)
        return model.fit_predict(x).astype(np.int64)

    if low == high:
        return fit(n_clusters=low)
    if threshold is None:
        raise ValueError("agglomerative clustering needs a threshold or num_speakers")
    labels = fit(n_clusters=None, distance_threshold=1.0 - float(threshold))
    count = len(np.unique(labels))
    if not low <= count <= high:
        labels = fit(n_clusters=min(max(count, low), high))
    return labels


def cluster(
    embeddings,
    method="spectral",
    num_speakers=None,
    min_speakers=1,
    max_speakers=None,
    threshold=None,
):
    """Speaker labels of embeddings, numbered in order of first appearance.

    With fewer than three embeddings the eigengap says nothing: spectral clustering then
    compares them with ``threshold`` (agglomerative), or calls them one speaker when no
    threshold is given.

    Arguments
    ---------
    embeddings : array-like
        ``[N, E]`` speaker embeddings (e.g. of consecutive windows).
    method : str
        ``"spectral"`` (eigengap) or ``"agglomerative"`` (threshold).
    num_speakers : int, optional
        Known number of speakers.
    min_speakers, max_speakers : int
        Bounds on the number of speakers.
    threshold : float, optional
        Cosine-similarity threshold of agglomerative clustering.

    Returns
    -------
    numpy.ndarray
        ``[N]`` int labels: 0 for the first speaker heard, 1 for the next, ...

    Example
    -------
    >>> cluster([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9]], num_speakers=2).tolist()
    [0, 1, 0]
    >>> cluster([[0.0, 1.0], [0.1, 0.9]]).tolist()
    [0, 0]
    """
    if method not in METHODS:
        raise ValueError(f"clustering must be one of {METHODS}, got {method!r}")
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    bounds = {"num_speakers": num_speakers, "min_speakers": min_speakers}
    bounds["max_speakers"] = max_speakers
    if method == "spectral" and (n >= 3 or num_speakers is not None):
        labels = spectral_clustering(embeddings, threshold=threshold, **bounds)
    elif method == "spectral" and threshold is None:
        labels = np.zeros(n, dtype=np.int64)
    else:
        labels = agglomerative_clustering(embeddings, threshold, **bounds)
    # Renumber by first appearance: deterministic names whatever the clusterer's order.
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))
    return order[np.searchsorted(np.unique(labels), labels)]
