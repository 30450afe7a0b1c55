"""Cohort statistics of adaptive s-norm at scale: the threshold-guided top-N
selection and the cohort product against straightforward references."""

import numpy as np
import pytest
import torch

from speechbrain_w2vbert_sv.scoring.score_normalization import (
    _matmul_transposed,
    _top_values,
    cohort_statistics,
)


def reference_statistics(embeddings, cohort, top_n):
    """Float64 cosine scores, a full sort per utterance, mean and std (ddof 1)."""
    u = embeddings.double() / embeddings.double().norm(dim=1, keepdim=True)
    c = cohort.double() / cohort.double().norm(dim=1, keepdim=True)
    top = (u @ c.T).sort(dim=1, descending=True).values[:, :top_n].numpy()
    return top.mean(axis=1), top.std(axis=1, ddof=1)


def problem(kind, utterances=300, cohort_size=2000, dim=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(utterances, dim, generator=gen), torch.randn(
            cohort_size, dim, generator=gen
        )
    # Speakers: each cohort speaker's utterances cluster around its centre, and
    # the evaluation utterances lie near some cohort speakers, so each
    # utterance's score distribution has a heavy right tail (not Gaussian).
    centres = torch.randn(cohort_size // 40, dim, generator=gen)
    cohort = centres.repeat_interleave(40, dim=0) + 0.3 * torch.randn(
        cohort_size, dim, generator=gen
    )
    near = torch.randint(0, centres.shape[0], (utterances,), generator=gen)
    embeddings = centres[near] + 0.5 * torch.randn(utterances, dim, generator=gen)
    if kind == "ties":
        cohort = cohort[: cohort_size // 4].repeat(4, 1)  # every score four times
    return embeddings, cohort


@pytest.mark.parametrize("kind", ["gaussian", "clustered", "ties"])
@pytest.mark.parametrize("chunk_size", [7, 256])
def test_cohort_statistics_match_full_sort(kind, chunk_size):
    embeddings, cohort = problem(kind)
    mean_scores, std_scores = cohort_statistics(
        embeddings, cohort, top_n=100, chunk_size=chunk_size
    )
    expected_mean, expected_std = reference_statistics(embeddings, cohort, 100)
    np.testing.assert_allclose(mean_scores.numpy(), expected_mean, atol=1e-6)
    np.testing.assert_allclose(std_scores.numpy(), expected_std, atol=1e-6)


def test_top_values_exact_whatever_the_threshold():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(60, 500, generator=gen)
    scores[:, :50] = scores[:, 50:100]  # ties inside and around the top 20
    top_n = 20
    kth = scores.topk(top_n, dim=1).values[:, -1]
    # Per row: a good guess, exactly the N-th score, too high (too few scores
    # reach it), too low (too many reach it), below everything.
    threshold = torch.stack(
        [kth - 0.3, kth, kth + 0.05, kth - 3.0, torch.full_like(kth, -100.0)]
    ).T.reshape(-1)[: scores.shape[0]]
    top = _top_values(scores, top_n, threshold)
    expected = scores.topk(top_n, dim=1).values
    assert torch.equal(top.sort(dim=1).values, expected.sort(dim=1).values)


def test_cohort_product_matches_float64():
    gen = torch.Generator().manual_seed(2)
    cohort = torch.randn(1000, 64, generator=gen)
    rows = torch.randn(37, 64, generator=gen)
    product = _matmul_transposed(cohort)(rows)
    expected = rows.double() @ cohort.double().T
    assert product.dtype == torch.float32 and product.shape == (37, 1000)
    torch.testing.assert_close(product.double(), expected, atol=1e-4, rtol=1e-6)


def test_cohort_statistics_in_parallel_streams_keep_the_thread_count():
    embeddings, cohort = problem("clustered", utterances=100)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # three streams of chunks of 7 utterances
        mean_scores, std_scores = cohort_statistics(embeddings, cohort, top_n=100, chunk_size=7)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    expected_mean, expected_std = reference_statistics(embeddings, cohort, 100)
    np.testing.assert_allclose(mean_scores.numpy(), expected_mean, atol=1e-6)
    np.testing.assert_allclose(std_scores.numpy(), expected_std, atol=1e-6)
