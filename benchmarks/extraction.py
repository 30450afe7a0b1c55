"""Embedding extraction for a file list: length-sorted batches against the usual ways.

A w2v-BERT 2.0 embedding model with the full-size layer widths (hidden 1024, 16 heads,
FFN 4096, MFA head with 256-dim output) but only ``--layers`` layers (default 4, to
fit the 2 shared cores), random weights, eval mode, fp32, ``torch.set_num_threads(2)``.
Files: FSDD recordings (8 kHz, 0.14-2.28 s, resampled to 16 kHz), ``--files`` of them.

Compared, interleaved after one warm-up of each, median and min-max of ``--repeats``:

- ``sorted``: ``extraction.embed_files`` (length-sorted batches of at most
  ``--batch_seconds`` padded seconds, each file padded by at most 20 %);
- ``single``: one file at a time (``encode_batch`` per file, as SpeechBrain's
  verification recipe embeds utterances);
- ``fixed``: batches of ``--batch_size`` files in list order (padding to the longest).

Run from the repository root::

    python benchmarks/extraction.py

Every method runs with the same 2 threads; CPU-time speed-ups are printed beside
the wall-clock ones. The model is also exported to ONNX (``export_onnx``) and run by
onnxruntime (``ONNXEmbeddingModel``) over the same files: the largest embedding
difference to PyTorch is printed (skipped without onnxruntime/onnxscript).
How to measure on shared machines: ``../shared/BENCHMARKING.md``.

Processes: the same files through ``distributed_extraction.extract_list`` (the path of
``w2vbert-sv embed`` under torchrun: header checks, duration-balanced parts, merge into
one ``.npz``) by one process with 2 threads, by 2 gloo processes with 1 thread each
(started once, then given the runs), and by one process with 1 thread (one core),
interleaved after a warm-up; process start and model loading are not timed.
``per_core_efficiency`` is the 2-process rate over twice the one-core rate (1.0: the
second core adds a whole core's worth).

The last line holds ``name=value`` pairs: thread counts, CPU-time speed-ups,
``onnx_max_abs_diff``, seconds per method, wall-clock speed-ups of ``sorted`` over
the others, padded/real sample ratios of the batchings, the largest embedding
difference between ``sorted`` and ``single``, files per second of one process (2
threads), two processes and one core, ``speedup_2proc`` (2 processes over one with 2
threads), ``per_core_efficiency``, and the largest difference of the 2-process
embeddings to one process's.
"""

import argparse
import os
import pathlib
import socket
import statistics
import sys
import tempfile
import time
import types

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from speechbrain_w2vbert_sv.data.audio import audio_info, load_audio  # noqa: E402
from speechbrain_w2vbert_sv.inference import distributed_extraction  # noqa: E402
from speechbrain_w2vbert_sv.inference.extraction import embed_files, make_batches  # noqa: E402
from speechbrain_w2vbert_sv.lobes.embedding_model import SpeakerEmbeddingModel  # noqa: E402
from speechbrain_w2vbert_sv.lobes.heads import MFAHead  # noqa: E402
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone  # noqa: E402
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank  # noqa: E402


def _pad(wavs):
    lengths = torch.tensor([w.shape[0] for w in wavs], dtype=torch.float64)
    batch = torch.zeros(len(wavs), int(lengths.max()))
    for row, wav in enumerate(wavs):
        batch[row, : wav.shape[0]] = wav
    return batch, (lengths / lengths.max()).float()


def onnx_parity(model, files):
    """Largest embedding difference of the exported ONNX graph (onnxruntime) and
    PyTorch over the files, or None (printed why) without onnxruntime/onnxscript."""
    try:
        from speechbrain_w2vbert_sv.inference.onnx import ONNXEmbeddingModel, export_onnx

        with tempfile.TemporaryDirectory() as folder:
            path = export_onnx(model, pathlib.Path(folder) / "model.onnx")
            runner = ONNXEmbeddingModel(path, W2VBertFbank())
            exported = embed_files(runner, files, progress=False)
    except ImportError as error:
        print(f"ONNX parity skipped: {error}")
        return None
    expected = embed_files(model, files, progress=False)
    return float((exported - expected).abs().max())


def build_model(layers):
    """The benchmark's model: full-width w2v-BERT layers, random weights from seed 0."""
    torch.manual_seed(0)
    return SpeakerEmbeddingModel(
        W2VBertFbank(),
        W2VBertBackbone(config={"num_hidden_layers": layers}),
        MFAHead(num_hidden_states=layers + 1),
    ).eval()


def _loaded(model):
    """What ``extract_list`` uses of a loaded model."""
    return types.SimpleNamespace(
        mods=types.SimpleNamespace(embedding_model=model),
        hparams=types.SimpleNamespace(sample_rate=16000),
        precision="fp32",
        device="cpu",
    )


def _extract(model, files, output, ranks, batch_seconds):
    distributed_extraction.extract_list(
        files,
        files,
        output,
        "npz",
        lambda: model,
        ranks,
        part_files=max(1, len(files) // 8),
        progress=False,
        batch_seconds=batch_seconds,
    )


def _rank_worker(rank, port, layers, files, batch_seconds, tasks, done):
    """One of 2 ranks (gloo, 1 thread): extracts ``files`` into each output it is sent."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
    )
    ranks = distributed_extraction.join_torchrun("cpu")
    torch.set_num_threads(1)  # 2 x 1 threads on any machine
    model = _loaded(build_model(layers))
    for output in iter(tasks[rank].get, None):
        _extract(model, files, output, ranks, batch_seconds)
        done.put(rank)
    torch.distributed.destroy_process_group()


def process_scaling(model, files, args):
    """Seconds per run (lists) of one process with 2 threads, 2 processes with 1 thread,
    and one process with 1 thread, and the largest 2-process vs 1-process difference."""
    context = torch.multiprocessing.get_context("spawn")
    tasks, done = [context.Queue() for _ in range(2)], context.Queue()
    with socket.socket() as probe:  # a free port for the ranks' group
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workers = [
        context.Process(
            target=_rank_worker,
            args=(rank, port, args.layers, files, args.batch_seconds, tasks, done),
        )
        for rank in range(2)
    ]
    for worker in workers:
        worker.start()
    model = _loaded(model)
    with tempfile.TemporaryDirectory() as folder:
        one_out, two_out = f"{folder}/one.npz", f"{folder}/two.npz"

        def one_process(threads):
            torch.set_num_threads(threads)
            try:
                _extract(model, files, one_out, distributed_extraction.Rank(), args.batch_seconds)
            finally:
                torch.set_num_threads(2)

        def two_processes():
            for queue in tasks:
                queue.put(two_out)
            for _ in tasks:
                done.get(timeout=3600)

        methods = {
            "1proc": lambda: one_process(2),
            "2proc": two_processes,
            "1core": lambda: one_process(1),
        }
        times = {name: [] for name in methods}
        try:
            for repeat in range(args.repeats + 1):  # the first round warms up
                for name, run in methods.items():
                    start = time.perf_counter()
                    run()
                    if repeat:
                        times[name].append(time.perf_counter() - start)
        finally:
            for queue in tasks:
                queue.put(None)
            for worker in workers:
                worker.join()
        with np.load(one_out) as one, np.load(two_out) as two:
            difference = float(np.abs(one["embeddings"] - two["embeddings"]).max())
    return times, difference


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--batch_seconds", type=float, default=30.0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    recordings = sorted((pathlib.Path(args.data) / "fsdd" / "recordings").glob("*.flac"))
    files = [str(p) for p in recordings[:: max(1, len(recordings) // args.files)][: args.files]]
    model = build_model(args.layers)

    def sorted_batches():
        return embed_files(model, files, batch_seconds=args.batch_seconds, progress=False)

    def single():
        with torch.no_grad():
            return torch.cat([model(load_audio(f)[None]).reshape(1, -1) for f in files])

    def fixed():
        out = []
        with torch.no_grad():
            for start in range(0, len(files), args.batch_size):
                wavs, lens = _pad([load_audio(f) for f in files[start : start + args.batch_size]])
                out.append(model(wavs, lens).reshape(len(lens), -1))
        return torch.cat(out)

    methods = {"sorted": sorted_batches, "single": single, "fixed": fixed}
    results = {name: fn() for name, fn in methods.items()}  # warm-up
    max_diff = float((results["sorted"] - results["single"]).abs().max())
    times = {name: [] for name in methods}
    cpu_times = {name: [] for name in methods}  # process CPU time, all threads
    for _ in range(args.repeats):
        for name, fn in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - start_cpu)
    onnx_diff = onnx_parity(model, files)
    scaling, scaling_diff = process_scaling(model, files, args)

    samples = [int(round(audio_info(f).duration * 16000)) for f in files]
    real = sum(samples)
    sorted_padded = sum(
        len(b) * max(samples[i] for i in b) for b in make_batches(samples, args.batch_seconds, 64)
    )
    fixed_padded = sum(
        len(chunk) * max(chunk)
        for chunk in (
            samples[i : i + args.batch_size] for i in range(0, len(samples), args.batch_size)
        )
    )
    print(
        f"{len(files)} FSDD files, {real / 16000:.1f} s of audio, {args.layers} full-width layers"
    )
    for name, values in times.items():
        print(
            f"{name:>7}: median {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )
    med = {name: statistics.median(values) for name, values in times.items()}
    cpu = {name: statistics.median(values) for name, values in cpu_times.items()}
    print(
        f"CPU time (all threads): sorted {cpu['sorted']:.2f} s, single {cpu['single']:.2f} s, "
        f"fixed {cpu['fixed']:.2f} s; every method with {torch.get_num_threads()} threads"
    )
    if onnx_diff is not None:
        print(f"ONNX (onnxruntime, CPU) vs PyTorch, embed_files: max |diff| {onnx_diff:.2e}")
    rate = {name: len(files) / statistics.median(values) for name, values in scaling.items()}
    labels = {"1proc": "1 process x 2 threads", "2proc": "2 processes x 1 thread"}
    for name, values in scaling.items():
        print(
            f"extract_list, {labels.get(name, '1 process x 1 thread')}: {rate[name]:.1f} files/s "
            f"(median {statistics.median(values):.2f} s, min {min(values):.2f}, "
            f"max {max(values):.2f})"
        )
    print(
        f"threads={torch.get_num_threads()} reference_threads={torch.get_num_threads()} "
        f"cpu_speedup_vs_single={cpu['single'] / cpu['sorted']:.2f} "
        f"cpu_speedup_vs_fixed={cpu['fixed'] / cpu['sorted']:.2f} "
        + (f"onnx_max_abs_diff={onnx_diff:.2e} " if onnx_diff is not None else "")
        + f"sorted_s={med['sorted']:.3f} single_s={med['single']:.3f} fixed_s={med['fixed']:.3f} "
        f"speedup_vs_single={med['single'] / med['sorted']:.2f} "
        f"speedup_vs_fixed={med['fixed'] / med['sorted']:.2f} "
        f"padding_sorted={sorted_padded / real:.3f} padding_fixed={fixed_padded / real:.3f} "
        f"max_diff={max_diff:.2e} "
        f"files_per_s_1proc={rate['1proc']:.2f} files_per_s_2proc={rate['2proc']:.2f} "
        f"files_per_s_1core={rate['1core']:.2f} "
        f"speedup_2proc={rate['2proc'] / rate['1proc']:.2f} "
        f"per_core_efficiency={rate['2proc'] / (2 * rate['1core']):.2f} "
        f"max_diff_2proc={scaling_diff:.2e}"
    )


if __name__ == "__main__":
    main()
