"""Speed and parity of the torch w2v-BERT front end against the HF extractor.

A batch of 32 clips of 3 s (real speech: three 1-s Arabic Speech Commands clips
joined per item, from the folder in ``SV_TEST_DATA``, default ``../shared/data``
from the repository root; white noise when that folder is absent) goes through
``W2VBertFbank`` (one call on the padded batch) and through
``transformers.SeamlessM4TFeatureExtractor`` (its batched call on the list of
numpy arrays), interleaved, on the CPU with 2 threads, after a warm-up.

Run from the repository root::

    python benchmarks/frontend.py [--repeats 15] [--threads 2]

The process restarts itself with the settings of ``BENCH_ENV`` below (malloc
tuning, one numpy BLAS thread) unless they are set. OpenMP keeps its default wait
policy, what a user of torch gets: its threads spin briefly between operations,
which saves a wake-up per operation on a quiet machine (ours took 16-20 ms here,
against 20-31 ms with passive waiting). On an oversubscribed machine spinning
threads wait for each other, so run with ``OMP_WAIT_POLICY=PASSIVE`` there.
The reference (numpy) runs single-threaded; ours with ``--threads``. Parity is
also checked per clip at even and odd fbank frame counts (clips of 3 s minus
0, 1, 2, ... hops, ours on the padded batch), and on the CUDA path when a GPU is
present. How to measure on shared machines: ``../shared/BENCHMARKING.md``.
The last line holds ``name=value`` pairs: thread counts, ``max_abs_diff_even`` /
``_odd`` (and ``_cuda_even`` / ``_cuda_odd``), ``speedup`` is the ratio of the
median wall times (reference / ours), ``cpu_time_ratio`` that of the median
process CPU times (steadier on a loaded machine), ``max_abs_diff`` the largest
feature difference on the timed batch.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

from _environment import MALLOC_ENV, restart_with

# Unless set (set them yourself to override); the reference's numpy BLAS threads spin
# while waiting, one BLAS thread spares it that.
BENCH_ENV = restart_with({**MALLOC_ENV, "OPENBLAS_NUM_THREADS": "1"}, keep_user_values=True)

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
from transformers import SeamlessM4TFeatureExtractor  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import (  # noqa: E402
    W2VBertFbank,
    num_fbank_frames,
)

SAMPLE_RATE = 16000


def load_batch(batch_size, seconds, seed=0):
    """Returns ``batch_size`` float32 clips of ``seconds`` and what they are."""
    data = pathlib.Path(os.environ.get("SV_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
    files = sorted((data / "arabic_speech_commands" / "dataset").glob("*/*.flac"))
    rng = np.random.default_rng(seed)
    length = int(seconds * SAMPLE_RATE)
    if not files:
        print(f"note: no Arabic Speech Commands clips under {data}; using white noise")
        clips = [0.1 * rng.standard_normal(length).astype(np.float32) for _ in range(batch_size)]
        return clips, "white noise"
    clips = []
    for _ in range(batch_size):
        parts, total = [], 0
        while total < length:
            audio, rate = soundfile.read(files[rng.integers(len(files))], dtype="float32")
            assert rate == SAMPLE_RATE, f"expected {SAMPLE_RATE} Hz audio, got {rate}"
            parts.append(audio)
            total += len(audio)
        clips.append(np.concatenate(parts)[:length])
    return clips, f"Arabic Speech Commands from {data}"


def parity(ours, reference, clips, device="cpu"):
    """Largest feature difference to the extractor, by parity of the fbank frame count.

    Clip i is cut to 3 s - i hops, so the fbank frame counts alternate between
    even and odd (an odd count drops its last frame when 2 frames are stacked);
    ours runs once on the padded batch (relative lengths), the extractor on each
    clip alone, and each clip's valid frames are compared.
    """
    lengths = [len(clips[0]) - ours.hop_length * i for i in range(len(clips))]
    cut = [clip[:n] for clip, n in zip(clips, lengths)]
    wavs = torch.zeros(len(cut), max(lengths))
    for row, clip in enumerate(cut):
        wavs[row, : len(clip)] = torch.from_numpy(clip)
    lens = torch.tensor(lengths, dtype=torch.float64) / max(lengths)
    with torch.no_grad():
        feats = ours.to(device)(wavs.to(device), lens.float().to(device))[0].cpu()
    ours.to("cpu")
    worst = {"even": 0.0, "odd": 0.0}
    for row, clip in enumerate(cut):
        out = reference(
            clip, sampling_rate=SAMPLE_RATE, return_tensors="np", return_attention_mask=True
        )
        # The extractor pads an odd frame count and masks the last stacked frame out.
        frames = int(out["attention_mask"][0].sum())
        assert frames == ours.num_output_frames(len(clip)), (frames, len(clip))
        expected = torch.from_numpy(out["input_features"][0, :frames])
        parity_name = "odd" if num_fbank_frames(len(clip)) % 2 else "even"
        diff = float((feats[row, :frames] - expected).abs().max())
        worst[parity_name] = max(worst[parity_name], diff)
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 for the record)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    clips, source = load_batch(args.batch_size, args.seconds)
    wavs = torch.from_numpy(np.stack(clips))
    ours = W2VBertFbank()
    reference = SeamlessM4TFeatureExtractor()

    def run_ours():
        with torch.no_grad():
            return ours(wavs)[0]

    def run_reference():
        return reference(clips, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"]

    feats, expected = run_ours(), run_reference()
    assert feats.shape == expected.shape, (feats.shape, expected.shape)
    max_abs_diff = float((feats - torch.from_numpy(expected)).abs().max())
    by_parity = parity(ours, reference, clips)
    cuda_parity = parity(ours, reference, clips, "cuda") if torch.cuda.is_available() else None

    times = {"ours": [], "reference": []}
    cpu_times = {"ours": [], "reference": []}  # process CPU time, all threads
    for _ in range(2):  # warm-up
        run_ours(), run_reference()
    for _ in range(args.repeats):
        for name, fn in (("ours", run_ours), ("reference", run_reference)):
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    ratios = [r / o for r, o in zip(times["reference"], times["ours"])]
    print(
        f"batch {args.batch_size} x {args.seconds:g} s ({source}), CPU, "
        f"torch.set_num_threads({args.threads}), {args.repeats} interleaved repeats"
    )
    for name, values in times.items():
        print(
            f"{name:>9}: median {med[name]:.1f} ms "
            f"(min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f})"
        )
    print(f"per-repeat speedup: min {min(ratios):.2f}, max {max(ratios):.2f}")
    cpu = {k: statistics.median(v) * 1e3 for k, v in cpu_times.items()}
    print(
        f"CPU time (all threads, less sensitive to other load): ours {cpu['ours']:.1f} ms, "
        f"reference {cpu['reference']:.1f} ms, ratio {cpu['reference'] / cpu['ours']:.2f}"
    )
    print(
        f"parity with the extractor (clips of 3 s minus 0-{len(clips) - 1} hops, padded batch): "
        f"max |diff| {by_parity['even']:.2e} at even, {by_parity['odd']:.2e} at odd fbank "
        f"frame counts; CUDA: "
        + (
            f"{cuda_parity['even']:.2e} even, {cuda_parity['odd']:.2e} odd"
            if cuda_parity
            else "no GPU here"
        )
    )
    print(
        f"threads: ours {args.threads} (torch), reference 1 (numpy; OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS')})"
    )
    shown = [*BENCH_ENV, "OMP_WAIT_POLICY"]
    print("environment: " + " ".join(f"{k}={os.environ.get(k, '(default)')}" for k in shown))
    print(
        f"threads={args.threads} reference_threads=1 "
        f"max_abs_diff_even={by_parity['even']:.3g} max_abs_diff_odd={by_parity['odd']:.3g} "
        + (
            f"max_abs_diff_cuda_even={cuda_parity['even']:.3g} "
            f"max_abs_diff_cuda_odd={cuda_parity['odd']:.3g} "
            if cuda_parity
            else ""
        )
        + f"ours_ms={med['ours']:.2f} reference_ms={med['reference']:.2f} "
        f"speedup_min={min(ratios):.2f} speedup_max={max(ratios):.2f} "
        f"cpu_time_ratio={cpu['reference'] / cpu['ours']:.2f} "
        f"speedup={med['reference'] / med['ours']:.2f} max_abs_diff={max_abs_diff:.3g}"
    )


if __name__ == "__main__":
    main()
