"""Training crops from WebDataset shards against crops from files, side by side.

1. Crops per second and per core, page cache warm: the stage-1 training item of
   ``benchmarks/dataloader.py`` (a 3 s random crop of an ~8 s utterance, speed
   perturbation 0.9 / 1.0 / 1.1, stage-1 ``RandomAugment``), from the files
   (``make_train_dataset``) and from shards of the same files (``ShardTrainDataset``,
   shuffle buffer 1000), each in this process with one torch thread (one DataLoader
   worker): crops per wall-clock second, and CPU milliseconds per crop (its inverse is
   the crops per second of a worker with a core to itself).
2. Read time per crop, cold: ``--clips`` one-second Arabic Speech Commands clips
   copied into a temporary folder (a directory of many small files, read in random
   order as a sampler does) against the same clips in shards (read in order). Cold
   means out of the page cache: before each timed pass every file of that side is
   evicted with ``posix_fadvise(POSIX_FADV_DONTNEED)``, which drops exactly those
   files' pages without emptying the cache of a machine others share;
   ``--drop-caches`` also writes 3 to ``/proc/sys/vm/drop_caches`` (root only). On a
   local SSD the gap is what per-file opens and seeks cost; a network filesystem
   widens it.

Data: ``../shared/data`` (or ``SV_TEST_DATA``), written to shards in a temporary
folder. Run from the repository root::

    python benchmarks/shards.py [--crops 64] [--repeats 3] [--clips 2000]

How to measure on shared machines: ``../shared/BENCHMARKING.md``. The last line holds
``name=value`` pairs: ``files_cpu_ms_per_crop``, ``shards_cpu_ms_per_crop``,
``files_crops_per_s``, ``shards_crops_per_s``, ``shards_vs_files_per_core``,
``cold_files_ms_per_crop``, ``cold_shards_ms_per_crop``, ``cold_files_vs_shards``.
"""

import argparse
import itertools
import os
import pathlib
import random
import shutil
import statistics
import sys
import tempfile
import time

from _environment import MALLOC_ENV, restart_with

restart_with(MALLOC_ENV)

import torch  # noqa: E402
from dataloader import AUGMENT, CROP_SECONDS, SPEED_PERTURB, build_corpus  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from speechbrain_w2vbert_sv.data.augmentation import RandomAugment  # noqa: E402
from speechbrain_w2vbert_sv.data.csv_io import write_csv  # noqa: E402
from speechbrain_w2vbert_sv.data.pipeline import make_train_dataset  # noqa: E402
from speechbrain_w2vbert_sv.data.shard_pipeline import ShardTrainDataset, find_shards  # noqa: E402
from speechbrain_w2vbert_sv.data.shards import write_shards  # noqa: E402


def file_items(dataset, seed=0):
    """Items of a file dataset, each pass a new random order (a sampler's reads)."""
    rng = random.Random(seed)
    order = list(range(len(dataset)))
    while True:
        rng.shuffle(order)
        for index in order:
            yield dataset[index]


def shard_items(dataset):
    """Items of a shard dataset, epoch after epoch."""
    for epoch in itertools.count(1):
        dataset.set_epoch(epoch)
        yield from dataset


def timed(items, count):
    """(crops per wall second, CPU ms per crop) of the next ``count`` items."""
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        item = next(items)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    assert item["sig"].ndim == 1
    return count / elapsed, 1e3 * cpu / count


def evict(paths, drop_caches):
    """Takes ``paths`` out of the page cache (and all of it with ``drop_caches``)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if drop_caches:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def shard_dataset(csv_file, folder, crop, speed, augment, buffer):
    """The shards of ``csv_file`` as a one-process ShardTrainDataset."""
    write_shards(csv_file, folder, shard_size_mb=16)
    shards, manifest = find_shards(sorted(str(p) for p in folder.glob("train-*.tar")))
    _, encoder, _ = make_train_dataset(csv_file, crop_seconds=crop)
    data = ShardTrainDataset(
        shards,
        encoder,
        crop_seconds=crop,
        speed_perturb=speed,
        shuffle_buffer=buffer,
        rank=0,
        world_size=1,
        augment=augment,
    )
    return data, [p for p, _ in shards]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=int, default=64, help="items per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--utterances", type=int, default=48, help="~8 s training files")
    parser.add_argument("--clips", type=int, default=2000, help="small files, cold reads")
    parser.add_argument("--drop-caches", action="store_true", help="also drop the page cache")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    data = pathlib.Path(os.environ.get("SV_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
    torch.manual_seed(0)
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        # 1. Throughput with the stage-1 item, warm.
        train_csv, noise_csv, babble_csv, rir_csv = build_corpus(data, tmp, args.utterances)
        augment = RandomAugment(
            noise_csv=noise_csv, babble_csv=babble_csv, rir_csv=rir_csv, **AUGMENT
        )
        files, _, _ = make_train_dataset(
            train_csv, crop_seconds=CROP_SECONDS, speed_perturb=SPEED_PERTURB, augment=augment
        )
        shards, _ = shard_dataset(
            train_csv, tmp / "shards", CROP_SECONDS, SPEED_PERTURB, augment, buffer=1000
        )
        sources = {"files": file_items(files), "shards": shard_items(shards)}
        for items in sources.values():
            timed(items, 8)  # warm-up: caches, RIRs, lists
        runs = {name: [] for name in sources}
        for _ in range(args.repeats):  # interleaved, so both see the same load
            for name, items in sources.items():
                runs[name].append(timed(items, args.crops))
        rate = {n: statistics.median(r for r, _ in runs[n]) for n in runs}
        cpu_ms = {n: statistics.median(c for _, c in runs[n]) for n in runs}

        # 2. Cold reads: many small files against shards of them.
        clips = sorted((data / "arabic_speech_commands" / "dataset").glob("*/*.flac"))
        clips = random.Random(0).sample(clips, min(args.clips, len(clips)))
        (tmp / "clips").mkdir()
        rows = []
        for i, clip in enumerate(clips):
            copy = tmp / "clips" / f"{i:05d}.flac"
            shutil.copyfile(clip, copy)
            rows.append({"ID": copy.stem, "duration": 1.0, "wav": copy, "spk_id": clip.name[:8]})
        write_csv(tmp / "clips.csv", rows)
        small, _, _ = make_train_dataset(tmp / "clips.csv", crop_seconds=1.0, speed_perturb=None)
        packed, shard_files = shard_dataset(
            tmp / "clips.csv", tmp / "clip_shards", 1.0, None, None, 0
        )
        cold = {"files": [], "shards": []}
        for _ in range(args.repeats):
            for name, items, paths in (
                ("files", lambda: file_items(small), [r["wav"] for r in rows]),
                ("shards", lambda: shard_items(packed), shard_files),
            ):
                evict(paths, args.drop_caches)
                cold[name].append(1e3 / timed(items(), len(rows))[0])
        cold_ms = {n: statistics.median(v) for n, v in cold.items()}

    print(
        f"stage-1 training item ({CROP_SECONDS[1]:g} s crops of ~8 s files, speed "
        f"{SPEED_PERTURB}, stage-1 augmentation), one process, 1 torch thread, warm cache; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    for name in runs:
        print(
            f"  from {name:6s}: {rate[name]:6.1f} crops/s wall, CPU {cpu_ms[name]:.1f} ms per "
            f"crop = {1e3 / cpu_ms[name]:.0f} crops per core-second"
        )
    print(f"  shards / files per core: {cpu_ms['files'] / cpu_ms['shards']:.2f}x")
    method = "posix_fadvise DONTNEED" + (" + drop_caches" if args.drop_caches else "")
    print(
        f"cold read of a 1 s crop ({len(rows)} clips, evicted with {method}, median of "
        f"{args.repeats}): files {cold_ms['files']:.2f} ms, shards {cold_ms['shards']:.2f} ms "
        f"-> files / shards {cold_ms['files'] / cold_ms['shards']:.2f}x"
    )
    pairs = {
        "files_cpu_ms_per_crop": f"{cpu_ms['files']:.1f}",
        "shards_cpu_ms_per_crop": f"{cpu_ms['shards']:.1f}",
        "files_crops_per_s": f"{rate['files']:.1f}",
        "shards_crops_per_s": f"{rate['shards']:.1f}",
        "shards_vs_files_per_core": f"{cpu_ms['files'] / cpu_ms['shards']:.2f}",
        "cold_files_ms_per_crop": f"{cold_ms['files']:.2f}",
        "cold_shards_ms_per_crop": f"{cold_ms['shards']:.2f}",
        "cold_files_vs_shards": f"{cold_ms['files'] / cold_ms['shards']:.2f}",
        "threads": "1",
    }
    print(" ".join(f"{k}={v}" for k, v in pairs.items()))


if __name__ == "__main__":
    main()
