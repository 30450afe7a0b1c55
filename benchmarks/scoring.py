"""Speed of verification scoring at VoxCeleb scale, against SpeechBrain's way.

(a) EER + minDCF (p_target 0.01 and 0.05) of 10 M random trials with
    ``verification_metrics`` (one sort), and ``compute_eer`` + ``compute_min_dcf``
    called separately (two sorts). No reference: SpeechBrain's functions cannot
    run at this size.
(b) ``compute_eer`` + ``compute_min_dcf`` against ``speechbrain.utils.metric_stats``
    ``EER`` + ``minDCF`` on the same 1e4 trials, interleaved, with a check that
    the values agree (SpeechBrain's minDCF is not normalised: ours x 0.01 must
    equal it; its EER is (FAR + FRR) / 2 at the closest threshold, so the two
    EERs may differ by at most one trial's share).
(c) adaptive s-norm (top-300 cohort, cohort 5,994, 256-dim random embeddings)
    on the real Vox1-H list (552,536 trials over 138,137 distinct utterances,
    ``voxceleb_trials/list_test_hard.txt.gz`` under ``../shared/data`` or
    ``SV_TEST_DATA``; a random list of the same sizes when it is absent):
    ``cosine_scores`` + ``adaptive_snorm`` (cohort statistics once per
    utterance) against the per-trial approach of SpeechBrain's VoxCeleb
    cosine recipe (every trial scores its enrollment and its test embedding
    against the whole cohort, then top-N, mean, std), timed on a sample of
    the list's trials and extrapolated per trial, with the same thread
    count; a leaner per-trial baseline (cohort normalised once, one mat-vec
    per side) is reported beside it. Both references score the sample, and
    ours must equal them within 1e-5. The peak memory of our call is the
    process's peak RSS during it minus the RSS before it.

All on the CPU with ``torch.set_num_threads(2)``; medians of ``--repeats``
runs (min-max beside them) after a warm-up, ours and the reference interleaved;
CPU-time ratios are printed beside the wall-clock ones. How to measure on
shared machines: ``../shared/BENCHMARKING.md``.

Run from the repository root::

    python benchmarks/scoring.py [--repeats 3]

The last line holds ``name=value`` pairs: ``eer_mindcf_10M_s`` (one-sort
metrics, seconds), ``sb_ratio_1e4`` (our time / SpeechBrain's at 1e4 trials),
``snorm_realH_s`` (cosine + adaptive s-norm of the Vox1-H list, seconds, the median
of the repeats; ``snorm_realH_s_min`` and ``snorm_realH_s_max`` beside it),
``snorm_realH_speedup`` (per-trial time extrapolated / ours, wall clock;
``..._cpu`` in CPU time), ``snorm_realH_speedup_vs_matvec`` (the same against
the leaner baseline), ``snorm_realH_max_abs_diff`` (against both references
on the sample), ``snorm_realH_peak_mb``, ``snorm_realH_list`` (real or random).
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

from _environment import MALLOC_ENV, restart_with

restart_with(MALLOC_ENV)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from speechbrain.utils.metric_stats import EER, minDCF  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from speechbrain_w2vbert_sv.scoring.cosine import cosine_scores  # noqa: E402
from speechbrain_w2vbert_sv.scoring.metrics import (  # noqa: E402
    compute_eer,
    compute_min_dcf,
    verification_metrics,
)
from speechbrain_w2vbert_sv.scoring.score_normalization import adaptive_snorm  # noqa: E402
from speechbrain_w2vbert_sv.scoring.trials import Trials, read_trials  # noqa: E402

VOX1_H_TRIALS = 552_536
VOX1_H_UTTERANCES = 138_137
COHORT = 5_994
DIM = 256
TOP_N = 300


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def timed_cpu(fn):
    """(wall-clock seconds, process CPU seconds), result."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    return (time.perf_counter() - start, time.process_time() - start_cpu), result


def summary(times):
    return f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})"


def random_trials(n, seed, separation=2.0):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    scores = (rng.standard_normal(n) + separation * labels).astype(np.float32)
    return scores, labels


def bench_10m(repeats):
    scores, labels = random_trials(10_000_000, seed=0)
    verification_metrics(scores, labels)  # warm-up
    one_sort, separate = [], []
    for _ in range(repeats):
        elapsed, metrics = timed(lambda: verification_metrics(scores, labels))
        one_sort.append(elapsed)
        elapsed, _ = timed(
            lambda: (compute_eer(scores, labels), compute_min_dcf(scores, labels, 0.01))
        )
        separate.append(elapsed)
    print(f"(a) 10 M trials: verification_metrics (EER + minDCF 0.01/0.05): {summary(one_sort)}")
    print(f"    compute_eer + compute_min_dcf, separately: {summary(separate)}")
    print(f"    EER {100 * metrics['eer']:.3f} % (theory for d'=2: 15.866 %)")
    return statistics.median(one_sort), statistics.median(separate)


def bench_speechbrain(n, repeats):
    scores, labels = random_trials(n, seed=1)
    positive, negative = torch.from_numpy(scores[labels]), torch.from_numpy(scores[~labels])

    def ours():
        return compute_eer(scores, labels), compute_min_dcf(scores, labels, 0.01)

    def reference():
        return EER(positive, negative)[0], minDCF(positive, negative, p_target=0.01)[0]

    ours(), reference()  # warm-up
    ours_times, reference_times = [], []
    for _ in range(repeats):
        elapsed, (eer, dcf) = timed(ours)
        ours_times.append(elapsed)
        elapsed, (sb_eer, sb_dcf) = timed(reference)
        reference_times.append(elapsed)
    ratio = statistics.median(ours_times) / statistics.median(reference_times)
    eer_diff = abs(eer - sb_eer)
    dcf_diff = abs(dcf * 0.01 - sb_dcf)  # SpeechBrain's minDCF is not normalised
    agree = eer_diff <= 1.0 / min(labels.sum(), (~labels).sum()) and dcf_diff < 1e-6
    print(f"(b) {n} trials, EER + minDCF: ours {summary(ours_times)}")
    print(
        f"    SpeechBrain EER + minDCF: {summary(reference_times)}; "
        f"ours / SpeechBrain = {ratio:.2e}"
    )
    print(
        f"    EER ours {100 * eer:.4f} % vs SpeechBrain {100 * sb_eer:.4f} %; minDCF x 0.01 "
        f"ours {dcf * 0.01:.6f} vs {sb_dcf:.6f}: {'agree' if agree else 'DISAGREE'}"
    )
    return ratio, eer_diff, dcf_diff, agree


def per_trial_snorm(enroll, test, cohort, top_n):
    """Adaptive s-norm the per-trial way: the cohort is re-scored for every trial."""
    similarity = torch.nn.CosineSimilarity(dim=-1, eps=1e-6)
    out = torch.empty(enroll.shape[0])
    for i in range(enroll.shape[0]):
        score = similarity(enroll[i], test[i])
        normalised = 0.0
        for side in (enroll[i], test[i]):
            cohort_scores = similarity(side.repeat(cohort.shape[0], 1), cohort)
            top = torch.topk(cohort_scores, k=top_n, dim=0).values
            normalised = normalised + 0.5 * (score - top.mean()) / top.std()
        out[i] = normalised
    return out


def per_trial_matvec_snorm(enroll, test, cohort, top_n):
    """A leaner per-trial baseline: cohort normalised once, one mat-vec per side."""
    cohort = torch.nn.functional.normalize(cohort, dim=1)
    out = torch.empty(enroll.shape[0])
    for i in range(enroll.shape[0]):
        e = torch.nn.functional.normalize(enroll[i], dim=0)
        t = torch.nn.functional.normalize(test[i], dim=0)
        score = e @ t
        normalised = 0.0
        for side in (e, t):
            top = torch.topk(cohort @ side, k=top_n).values
            normalised = normalised + 0.5 * (score - top.mean()) / top.std()
        out[i] = normalised
    return out


def vox1_h_trials(seed=2):
    """The real Vox1-H list when present, else a random list of its sizes."""
    data = pathlib.Path(os.environ.get("SV_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
    path = data / "voxceleb_trials" / "list_test_hard.txt.gz"
    if path.is_file():
        return read_trials(path), "real"
    print(f"    {path} not found: a random list of the Vox1-H sizes instead")
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, VOX1_H_UTTERANCES, (VOX1_H_TRIALS, 2), generator=gen).numpy()
    labels = (torch.rand(VOX1_H_TRIALS, generator=gen) < 0.5).numpy().astype(np.int8)
    ids = tuple(f"utt{i:06d}" for i in range(VOX1_H_UTTERANCES))
    return Trials(labels, pairs[:, 0], pairs[:, 1], ids), "random"


def rss_mb(field):
    """VmRSS or VmHWM (the peak) of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_delta_mb(fn):
    """Runs fn; its peak RSS above the RSS before it (Linux: the peak is reset first)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = rss_mb("VmRSS")
    fn()
    return rss_mb("VmHWM") - before


def ours_snorm(trials, embeddings, ids, cohort):
    raw = cosine_scores(trials, embeddings, ids=ids)
    return adaptive_snorm(raw, trials, embeddings, cohort, ids=ids, top_n=TOP_N)


def bench_snorm(repeats, reference_trials, seed=2):
    read_s, (trials, kind) = timed(vox1_h_trials)
    ids = list(trials.utterances)
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(len(ids), DIM, generator=gen)
    cohort = torch.randn(COHORT, DIM, generator=gen)
    sample = torch.randperm(len(trials), generator=gen)[:reference_trials]
    enroll = embeddings[torch.as_tensor(trials.enroll_index)[sample]]
    test = embeddings[torch.as_tensor(trials.test_index)[sample]]

    ours_snorm(trials, embeddings, ids, cohort)  # warm-up
    per_trial_snorm(enroll[:20], test[:20], cohort, TOP_N)
    per_trial_matvec_snorm(enroll[:20], test[:20], cohort, TOP_N)
    ours_t, ours_cpu, trial_t, trial_cpu, matvec_t = [], [], [], [], []
    for _ in range(repeats):
        (elapsed, cpu), normed = timed_cpu(lambda: ours_snorm(trials, embeddings, ids, cohort))
        ours_t.append(elapsed)
        ours_cpu.append(cpu)
        (elapsed, cpu), reference = timed_cpu(lambda: per_trial_snorm(enroll, test, cohort, TOP_N))
        trial_t.append(elapsed / reference_trials)
        trial_cpu.append(cpu / reference_trials)
        elapsed, lean = timed(lambda: per_trial_matvec_snorm(enroll, test, cohort, TOP_N))
        matvec_t.append(elapsed / reference_trials)
    peak_mb = peak_rss_delta_mb(lambda: ours_snorm(trials, embeddings, ids, cohort))
    max_diff = max(
        float((normed[sample] - reference).abs().max()),
        float((normed[sample] - lean).abs().max()),
    )
    n = len(trials)
    ours_s, per_trial_s = statistics.median(ours_t), statistics.median(trial_t)
    speedup = per_trial_s * n / ours_s
    speedup_cpu = statistics.median(trial_cpu) * n / statistics.median(ours_cpu)
    matvec_speedup = statistics.median(matvec_t) * n / ours_s
    threads = torch.get_num_threads()
    print(
        f"(c) adaptive s-norm, {kind} Vox1-H list ({n} trials, {len(ids)} utterances; read "
        f"in {read_s:.2f} s), cohort {COHORT}, top {TOP_N}, {DIM}-dim, {threads} threads: "
        f"cosine + s-norm {summary(ours_t)}, CPU time {statistics.median(ours_cpu):.2f} s; "
        f"peak memory {peak_mb:.0f} MB above the RSS before the call"
    )
    print(
        f"    per-trial approach ({threads} threads): {1e3 * per_trial_s:.2f} ms per trial "
        f"(median of {repeats} x {reference_trials} trials, min {1e3 * min(trial_t):.2f}, "
        f"max {1e3 * max(trial_t):.2f}) -> {per_trial_s * n:.0f} s extrapolated; speedup "
        f"{speedup:.0f}x wall clock, {speedup_cpu:.0f}x CPU time"
    )
    print(
        f"    leaner per-trial baseline (normalised cohort, mat-vec): "
        f"{1e3 * statistics.median(matvec_t):.2f} ms per trial -> speedup {matvec_speedup:.0f}x"
    )
    print(
        f"    max |ours - references| on the {reference_trials} sampled trials: {max_diff:.1e} "
        f"({'equal within 1e-5' if max_diff <= 1e-5 else 'DIFFER by more than 1e-5'})"
    )
    return {
        "snorm_realH_s": f"{ours_s:.3f}",
        "snorm_realH_s_min": f"{min(ours_t):.3f}",
        "snorm_realH_s_max": f"{max(ours_t):.3f}",
        "snorm_realH_cpu_s": f"{statistics.median(ours_cpu):.3f}",
        "snorm_realH_speedup": f"{speedup:.0f}",
        "snorm_realH_speedup_cpu": f"{speedup_cpu:.0f}",
        "snorm_realH_speedup_vs_matvec": f"{matvec_speedup:.0f}",
        "snorm_realH_per_trial_ms": f"{1e3 * per_trial_s:.3f}",
        "snorm_realH_max_abs_diff": f"{max_diff:.1e}",
        "snorm_realH_equal_1e-5": str(max_diff <= 1e-5),
        "snorm_realH_peak_mb": f"{peak_mb:.0f}",
        "snorm_realH_list": kind,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sb-trials", type=int, default=10_000)
    parser.add_argument("--reference-trials", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}")

    one_sort_s, separate_s = bench_10m(args.repeats)
    ratio, eer_diff, dcf_diff, agree = bench_speechbrain(args.sb_trials, args.repeats)
    snorm_pairs = bench_snorm(args.repeats, args.reference_trials)

    pairs = {
        "threads": str(torch.get_num_threads()),
        "eer_mindcf_10M_s": f"{one_sort_s:.3f}",
        "eer_plus_mindcf_separate_10M_s": f"{separate_s:.3f}",
        "sb_ratio_1e4": f"{ratio:.2e}",
        "sb_speedup_1e4": f"{1 / ratio:.0f}",
        "sb_eer_abs_diff": f"{eer_diff:.1e}",
        "sb_mindcf_abs_diff": f"{dcf_diff:.1e}",
        "sb_agree": str(agree),
        **snorm_pairs,
    }
    print(" ".join(f"{k}={v}" for k, v in pairs.items()))


if __name__ == "__main__":
    main()
