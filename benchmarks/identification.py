"""Speaker identification at scale and on real speech.

Scale: ``--speakers`` (default 1 M) random enrolled speakers of ``--dim`` (256) dims,
written as a speaker store (float16 rows, ``applications/identification.py``):
``store_mb`` (its files on disk), ``load_ms`` (opening it memory-mapped, median of
``--repeats``), and the latency of one query's top-5 search with ``--threads`` (2) threads,
median over ``--repeats`` distinct queries after a warm-up, the methods interleaved:

- ``search_ms``: the store's search (float16 matrix-vector products over the memory-mapped
  rows in blocks, top-k merged, candidates rescored in float32): the chosen method;
- ``fp32_blocks_ms``: the same blocks converted to float32 first (its path for 4+ queries);
- ``numpy_fp32_ms``: NumPy's float32 product with an in-memory float32 copy (twice the
  memory), then ``argpartition``;
- ``torch_bf16_ms``: torch's bfloat16 product with an in-memory bfloat16 copy;
- ``faiss_flat_ms``: faiss ``IndexFlatIP`` (exact, float32 copy in memory);
- ``faiss_sq_fp16_ms``: faiss ``IndexScalarQuantizer`` with float16 codes (exact up to
  float16, the same bytes as the store);
- ``batch64_ms_per_query``: the store's search of 64 queries at once, per query.

Each ``<method>_ratio`` is its latency over ``search_ms`` (above 1: the store's search is
faster). Every method's top-1 is checked against the float32 brute force.

Accuracy: ``top1_accuracy`` of the 6 held-out Arabic Speech Commands val speakers with the
small teacher of ``recipes/VoxCeleb/README.md`` (trained and cached by
``benchmarks/diarization.py``'s ``teacher``, reused here): each speaker enrolled with its
clips of the first 20 keywords (alphabetical), every clip of the other 20 identified
(closed set: the best speaker, no threshold). ``open_set_accuracy``: the same with the
model's threshold, a clip of a speaker left out of the store being right when answered
``unknown`` (each speaker left out in turn).

Run from the repository root next to ``../shared``: ``python benchmarks/identification.py``
(about 5 min on an idle 2-core machine once the teacher is cached; ``--quick``: 100 k
speakers, the 1-epoch teacher). The last line holds ``name=value`` pairs. How to measure
on a shared machine: ../shared/BENCHMARKING.md.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

from _environment import PASSIVE_OPENMP_ENV, restart_with

restart_with(PASSIVE_OPENMP_ENV)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from speechbrain_w2vbert_sv.applications.identification import (  # noqa: E402
    SpeakerStore,
    _as_tensor,
    model_fingerprint,
)
from speechbrain_w2vbert_sv.inference.interface import load_model  # noqa: E402
from tests.conftest import DATA_ROOT  # noqa: E402

ASC = DATA_ROOT / "arabic_speech_commands"
TOP_K = 5


def random_store(folder, count, dim):
    """A store of ``count`` random unit-norm speakers, written in one pass."""
    rng = np.random.default_rng(0)
    rows = np.empty((count, dim), dtype=np.float16)
    for start in range(0, count, 1 << 16):
        block = rng.standard_normal((min(1 << 16, count - start), dim), dtype=np.float32)
        rows[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    names = [f"speaker{i:07d}" for i in range(count)]
    fingerprint = rng.standard_normal(dim)
    store = SpeakerStore(
        names,
        rows,
        np.ones(count, np.float32),
        np.ones(count, np.int64),
        fingerprint / np.linalg.norm(fingerprint),
        "random",
        "float16",
    )
    return store.save(folder)


def folder_mb(folder):
    return sum(p.stat().st_size for p in pathlib.Path(folder).iterdir()) / 2**20


def fp32_blocks(table, query, k, block_rows=1 << 16):
    """The store's 4+-query path for one query: blocks to float32, then one product."""
    best = []
    for start in range(0, len(table), block_rows):
        block = _as_tensor(table[start : start + block_rows]).float()
        scores, rows = torch.topk(block @ query, k)
        best.append((scores, rows + start))
    scores = torch.cat([s for s, _ in best])
    rows = torch.cat([r for _, r in best])
    return rows[torch.topk(scores, k).indices]


def scale(args):
    import faiss

    faiss.omp_set_num_threads(args.threads)
    figures = {}
    with tempfile.TemporaryDirectory(dir=REPO_ROOT / "benchmarks" / "cache") as tmp:
        folder = pathlib.Path(tmp) / "speakers"
        start = time.perf_counter()
        random_store(folder, args.speakers, args.dim)
        print(f"wrote {args.speakers} speakers in {time.perf_counter() - start:.1f} s")
        figures["store_mb"] = folder_mb(folder)
        loads = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            store = SpeakerStore.open(folder)
            loads.append(time.perf_counter() - start)
        figures["load_ms"] = 1e3 * float(np.median(loads))
        table = store.rows
        fp32 = np.asarray(table, dtype=np.float32)
        bf16 = torch.from_numpy(fp32).bfloat16()
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(fp32)
        sq = faiss.IndexScalarQuantizer(
            args.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        sq.train(fp32[:1000])
        sq.add(fp32)
        rng = np.random.default_rng(1)
        queries = rng.standard_normal((args.repeats + 1, args.dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        methods = {
            "search": lambda q: store.search(q[None], TOP_K)[1][0],
            "fp32_blocks": lambda q: fp32_blocks(table, torch.from_numpy(q), TOP_K).numpy(),
            "numpy_fp32": lambda q: np.argpartition(fp32 @ q, -TOP_K)[-TOP_K:],
            "torch_bf16": lambda q: torch.topk(bf16 @ torch.from_numpy(q).bfloat16(), TOP_K)[
                1
            ].numpy(),
            "faiss_flat": lambda q: flat.search(q[None], TOP_K)[1][0],
            "faiss_sq_fp16": lambda q: sq.search(q[None], TOP_K)[1][0],
        }
        times = {name: [] for name in methods}
        agree = {name: 0 for name in methods}
        for i, query in enumerate(queries):
            truth = int(np.argmax(fp32 @ query))
            for name, method in methods.items():  # interleaved; query 0 warms up
                start = time.perf_counter()
                found = method(query)
                elapsed = time.perf_counter() - start
                if i:
                    times[name].append(elapsed)
                    agree[name] += truth in np.asarray(found).tolist()
        batch = rng.standard_normal((64, args.dim)).astype(np.float32)
        store.search(batch[:8], TOP_K)
        start = time.perf_counter()
        store.search(batch, TOP_K)
        figures["batch64_ms_per_query"] = 1e3 * (time.perf_counter() - start) / 64
        for name in methods:
            median = 1e3 * float(np.median(times[name]))
            low, high = 1e3 * min(times[name]), 1e3 * max(times[name])
            print(
                f"{name}: {median:.1f} ms per query ({low:.1f}-{high:.1f}), "
                f"best speaker among its top {TOP_K} for {agree[name]}/{args.repeats}"
            )
            figures[f"{name}_ms"] = median
        for name in methods:
            if name != "search":
                figures[f"{name}_ratio"] = figures[f"{name}_ms"] / figures["search_ms"]
    return figures


def asc_clips():
    """{speaker: [(keyword, path)]} of the ASC val speakers."""
    clips = {}
    for line in (ASC / "val.csv").read_text().splitlines()[1:]:
        path, keyword = line.split(",")
        clips.setdefault(pathlib.Path(path).name[:8], []).append((keyword, str(ASC / path)))
    return clips


def accuracy(args):
    from diarization import teacher

    model = load_model(teacher(epochs=1 if args.quick else 6), run_opts={"device": "cpu"})
    clips = asc_clips()
    keywords = sorted({k for items in clips.values() for k, _ in items})
    enroll_words = set(keywords[: len(keywords) // 2])
    enroll = [(s, p) for s, items in clips.items() for k, p in items if k in enroll_words]
    test = [(s, p) for s, items in clips.items() for k, p in items if k not in enroll_words]
    paths = [p for _, p in enroll + test]
    start = time.perf_counter()
    embeddings = model.encode_files(paths, progress=False).numpy()
    print(f"embedded {len(paths)} clips in {time.perf_counter() - start:.1f} s")
    enrolled, tested = embeddings[: len(enroll)], embeddings[len(enroll) :]
    speakers = [s for s, _ in enroll]
    fingerprint = model_fingerprint(model)
    store = SpeakerStore.create(len(fingerprint), fingerprint, "teacher").updated(
        speakers, enrolled
    )
    truth = [s for s, _ in test]
    found = [r.speaker for r in store.identify(tested, threshold=-1.0)]
    figures = {"top1_accuracy": float(np.mean([a == b for a, b in zip(found, truth)]))}
    right = 0
    for left_out in sorted(clips):
        keep = [i for i, s in enumerate(speakers) if s != left_out]
        partial = SpeakerStore.create(len(fingerprint), fingerprint, "teacher").updated(
            [speakers[i] for i in keep], enrolled[keep]
        )
        results = partial.identify(tested, threshold=model.hparams.threshold)
        right += sum(
            r.speaker == ("unknown" if t == left_out else t) for r, t in zip(results, truth)
        )
    figures["open_set_accuracy"] = right / (len(test) * len(clips))
    figures["enroll_clips"], figures["test_clips"] = len(enroll), len(test)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speakers", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100 k speakers, 1-epoch teacher")
    args = parser.parse_args()
    if args.quick:
        args.speakers, args.repeats = 100_000, 5
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    (REPO_ROOT / "benchmarks" / "cache").mkdir(exist_ok=True)
    figures = {"speakers": args.speakers, "dim": args.dim}
    figures.update(scale(args))
    figures.update(accuracy(args))
    figures["threads"] = args.threads
    figures["seconds"] = time.perf_counter() - started
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
        + f" load={load}"
    )


if __name__ == "__main__":
    main()
