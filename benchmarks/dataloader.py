"""Training crops per second per data-loading worker, against what one GPU consumes.

The stage-1 training item of ``recipes/VoxCeleb/hparams/stage1.yaml`` on real files: a random
crop of the longest crop length (3 s; each batch is then cut to a random
2-3 s), speed perturbation among 0.9 / 1.0 / 1.1 (resampling), then one of
{clean, additive noise or babble, reverberation} with equal probability
(``RandomAugment`` with the yaml's SNRs, babble of 3 speech segments). That is
``make_train_dataset(...)[i]``, exactly what a DataLoader worker runs per item.

Files, from ``../shared/data`` (or ``SV_TEST_DATA``): training utterances of
about 8 s (VoxCeleb's typical length), each 8 one-second Arabic Speech Commands
clips of one speaker written as one 16 kHz wav in a temporary folder; noise:
the corpus's two real background recordings (85 s and 104 s, read in random
segments like MUSAN's); babble: Arabic Speech Commands clips of other
speakers; reverberation: ``synthesize_rirs`` (RT60 0.3 / 0.5 / 0.8 s; no real
RIR corpus is at hand, and a convolution's cost depends on the RIR length
only).

One worker is one process with one torch thread (what a DataLoader worker
gets), so this process runs the items itself: after a warm-up, ``--repeats``
runs of ``--crops`` items each; crops/s is the median (min-max beside it),
with the CPU time per crop. Each augmentation branch is also timed alone.

What one GPU consumes is not measured here (no GPU): it is estimated from the
model's multiply-accumulates (``count_encoder_macs``: 29.17 G per second of
audio) for the paper's batch of 64 crops of 2-3 s (2.5 s on average): a stage-1
step is a forward and a backward pass through the frozen encoder (activation
gradients only, about as many operations as the forward; the LoRA and head
weight gradients are negligible), so 2 x 2 x MACs floating-point operations,
at ``--gpu-tflops`` sustained (default 125: 40 % of an A100's 312 bf16
TFLOPS dense peak; use your GPU's figure, e.g. about 400 for an H100 SXM at
40 %), or a measured ``--gpu-step-s``. Workers needed = crops per second the
GPU consumes / crops per CPU-second of one worker (a worker with a core to
itself), rounded up; the wall-clock rate on this shared machine is printed
beside it.

Run from the repository root::

    python benchmarks/dataloader.py [--crops 64] [--repeats 3]

How to measure on shared machines: ``../shared/BENCHMARKING.md``. The last line
holds ``name=value`` pairs: ``cpu_ms_per_crop`` and ``crops_per_cpu_s`` (medians),
``crops_per_s_per_worker_wall``, per-branch CPU ms, ``gpu_step_s`` (estimated or
given), ``gpu_crops_per_s`` and ``workers_per_gpu``.
"""

import argparse
import math
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time

from _environment import MALLOC_ENV, restart_with

restart_with(MALLOC_ENV)

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from speechbrain_w2vbert_sv.data.augmentation import (  # noqa: E402
    RandomAugment,
    prepare_noise_csv,
    prepare_rir_csv,
    synthesize_rirs,
)
from speechbrain_w2vbert_sv.data.csv_io import write_csv  # noqa: E402
from speechbrain_w2vbert_sv.data.pipeline import make_train_dataset  # noqa: E402
from speechbrain_w2vbert_sv.pruning.counting import count_encoder_macs  # noqa: E402

SAMPLE_RATE = 16000
CROP_SECONDS = (2.0, 3.0)  # stage1.yaml
SPEED_PERTURB = (0.9, 1.0, 1.1)
BATCH = 64  # the paper's per-GPU batch
CLIPS_PER_UTTERANCE = 8
# stage1.yaml's RandomAugment settings.
AUGMENT = dict(snr_low=5, snr_high=20, babble_snr_low=15, babble_snr_high=25, babble_count=3)


def build_corpus(data, folder, utterances, seed=0):
    """Training CSV of ~8 s utterances, and the noise, babble and RIR CSVs."""
    asc = data / "arabic_speech_commands"
    clips = sorted((asc / "dataset").glob("*/*.flac"))
    if not clips:
        raise SystemExit(f"no Arabic Speech Commands clips under {asc / 'dataset'}")
    by_speaker = {}
    for clip in clips:
        by_speaker.setdefault(clip.name[:8], []).append(clip)
    speakers = sorted(by_speaker)
    training, babble_speakers = speakers[: len(speakers) // 2], speakers[len(speakers) // 2 :]
    rng = random.Random(seed)
    rows = []
    (folder / "train").mkdir()
    for i in range(utterances):
        speaker = training[i % len(training)]
        parts = [
            soundfile.read(p, dtype="float32")[0]
            for p in rng.sample(by_speaker[speaker], CLIPS_PER_UTTERANCE)
        ]
        audio = np.concatenate(parts)
        path = folder / "train" / f"{speaker}_{i:04d}.wav"
        soundfile.write(path, audio, SAMPLE_RATE)
        rows.append(
            {
                "ID": path.stem,
                "duration": len(audio) / SAMPLE_RATE,
                "wav": str(path),
                "spk_id": speaker,
            }
        )
    write_csv(folder / "train.csv", rows)
    babble = folder / "babble_speech"
    babble.mkdir()
    for speaker in babble_speakers:
        for clip in by_speaker[speaker][:20]:
            (babble / f"{clip.parent.name}_{clip.name}").symlink_to(clip)
    noise_csv = prepare_noise_csv(asc / "background_noise", folder, name="noise")
    babble_csv = prepare_noise_csv(babble, folder, name="babble")
    synthesize_rirs(folder / "rirs")
    rir_csv = prepare_rir_csv(folder / "rirs", folder)
    return folder / "train.csv", noise_csv, babble_csv, rir_csv


def crops_per_second(dataset, crops, repeats, seed=0):
    """Median crops/s over ``repeats`` runs of ``crops`` items, and CPU ms per crop."""
    rng = random.Random(seed)
    ids = dataset.data_ids
    for _ in range(8):  # warm-up: file caches, RIR cache, lists
        dataset[rng.randrange(len(ids))]
    rates, cpu = [], []
    for _ in range(repeats):
        indices = [rng.randrange(len(ids)) for _ in range(crops)]
        start, start_cpu = time.perf_counter(), time.process_time()
        for index in indices:
            item = dataset[index]
        elapsed = time.perf_counter() - start
        rates.append(crops / elapsed)
        cpu.append(1e3 * (time.process_time() - start_cpu) / crops)
    assert item["sig"].shape == (int(CROP_SECONDS[1] * SAMPLE_RATE),), item["sig"].shape
    return statistics.median(rates), min(rates), max(rates), statistics.median(cpu)


def gpu_step_seconds(args):
    """(seconds per step, how it was obtained)."""
    if args.gpu_step_s:
        return args.gpu_step_s, "given with --gpu-step-s"
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    with torch.device("meta"):
        model = Wav2Vec2BertModel(Wav2Vec2BertConfig())
    mean_crop = sum(CROP_SECONDS) / 2
    flops = 2 * 2 * count_encoder_macs(model, seconds=mean_crop) * BATCH
    return flops / (args.gpu_tflops * 1e12), (
        f"estimated: {flops / 1e12:.1f} TFLOP per step (forward + activation-gradient "
        f"backward of the frozen encoder, {BATCH} x {mean_crop:g} s) at "
        f"{args.gpu_tflops:g} TFLOPS sustained"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=int, default=64, help="items per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--utterances", type=int, default=48, help="~8 s training files")
    parser.add_argument("--gpu-tflops", type=float, default=125.0)
    parser.add_argument("--gpu-step-s", type=float, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    data = pathlib.Path(os.environ.get("SV_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
    torch.manual_seed(0)
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        train_csv, noise_csv, babble_csv, rir_csv = build_corpus(
            data, pathlib.Path(tmp), args.utterances
        )
        lists = dict(noise_csv=noise_csv, babble_csv=babble_csv, rir_csv=rir_csv)
        setups = {
            "stage1": RandomAugment(**lists, **AUGMENT),
            "clean": RandomAugment(**lists, **AUGMENT, noise_weight=0, reverb_weight=0),
            "noise": RandomAugment(**lists, **AUGMENT, clean_weight=0, reverb_weight=0),
            "reverb": RandomAugment(**lists, **AUGMENT, clean_weight=0, noise_weight=0),
        }
        results = {}
        for name, augment in setups.items():
            dataset, _, _ = make_train_dataset(
                train_csv,
                crop_seconds=CROP_SECONDS,
                speed_perturb=SPEED_PERTURB,
                augment=augment,
            )
            repeats = args.repeats if name == "stage1" else 1
            results[name] = crops_per_second(dataset, args.crops, repeats)

    rate, low, high, cpu_ms = results["stage1"]
    cpu_rate = 1e3 / cpu_ms  # a worker with a core to itself
    step_s, step_source = gpu_step_seconds(args)
    gpu_rate = BATCH / step_s
    workers = math.ceil(gpu_rate / cpu_rate)
    print(
        f"training items: {CROP_SECONDS[1]:g} s crops of ~{CLIPS_PER_UTTERANCE} s real-speech "
        f"files ({data}), speed perturbation {SPEED_PERTURB}, stage-1 augmentation; one "
        f"worker = this process, 1 torch thread; load average {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"stage-1 mix: CPU {cpu_ms:.1f} ms per crop = {cpu_rate:.0f} crops per CPU-second "
        f"(a worker with a core to itself); wall clock here {rate:.1f} crops/s (median of "
        f"{args.repeats} x {args.crops}; min {low:.1f}, max {high:.1f}), lower when other "
        f"work shares the cores"
    )
    for name in ("clean", "noise", "reverb"):
        print(
            f"  {name:6s} only: CPU {results[name][3]:.1f} ms per crop "
            f"({results[name][0]:.1f} crops/s wall)"
        )
    print(f"one GPU, stage 1, batch {BATCH}: {step_s:.3f} s per step ({step_source})")
    print(
        f"-> it consumes {gpu_rate:.0f} crops/s: {workers} workers, each with its own core "
        f"(stage1.yaml has num_workers: 8; at this machine's wall-clock rate it would take "
        f"{math.ceil(gpu_rate / rate)}); reading files from a disk rather than the page "
        f"cache adds latency that more workers hide"
    )
    pairs = {
        "cpu_ms_per_crop": f"{cpu_ms:.1f}",
        "crops_per_cpu_s": f"{cpu_rate:.0f}",
        "crops_per_s_per_worker_wall": f"{rate:.1f}",
        "clean_cpu_ms": f"{results['clean'][3]:.1f}",
        "noise_cpu_ms": f"{results['noise'][3]:.1f}",
        "reverb_cpu_ms": f"{results['reverb'][3]:.1f}",
        "gpu_step_s": f"{step_s:.3f}",
        "gpu_crops_per_s": f"{gpu_rate:.0f}",
        "workers_per_gpu": str(workers),
        "threads": "1",
    }
    print(" ".join(f"{k}={v}" for k, v in pairs.items()))


if __name__ == "__main__":
    main()
