"""Embedding of one file list by several processes (torchrun), resumable after a kill.

The list (its distinct files, in its order) is cut into parts of ``part_files``
consecutive files. A part is the unit of work and of resumption: once embedded it is
written to ``<output>.parts/part-<j>.pt`` (a temporary file, then ``os.replace``), and a
rerun keeps the parts already there and embeds only the others. The parts still to do
are dealt to the ranks by duration (longest first, each to the rank with the least
audio so far), so the ranks' totals differ by at most one part's duration. Part
boundaries depend only on the list and ``part_files``, never on the number of
processes: a rerun with another world size reuses every finished part. Within a rank,
each part's files are batched by length as in ``extraction.embed_files``, and one
DataLoader reads ahead across its parts.

After a barrier, rank 0 merges the parts in the list's order into the output (``.npz``,
``.pt``, or an embedding store folder, written part by part so that lists larger than
memory fit) and removes the parts folder, which is beside the output (on several nodes,
the output must be on a filesystem they share). One process (no torchrun) takes the same
path with one rank, so a killed single-process ``embed`` resumes too.

Under torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) the processes join a
torch.distributed group through SpeechBrain's ``ddp_init_group``: NCCL with one GPU per
local rank, gloo on CPUs, where each rank gets ``cores / ranks on the node`` threads
(cores: ``os.sched_getaffinity``, the cores this process may run on).

Example
-------
>>> balance_by_duration([5.0, 1.0, 4.0, 2.0, 3.0], num_ranks=2)
[[0, 3, 1], [2, 4]]
>>> part_ranges(num_files=5, part_files=2)
[(0, 2), (2, 4), (4, 5)]
"""

import hashlib
import heapq
import json
import os
import pathlib
import shutil
import tempfile
from typing import NamedTuple

import numpy as np
import torch
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, ddp_init_group
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.embedding_store import EmbeddingStoreWriter, is_store
from speechbrain_w2vbert_sv.data.file_checks import check_audio_files
from speechbrain_w2vbert_sv.inference.extraction import embed_batches, make_batches

logger = get_logger(__name__)

PARTS_SUFFIX = ".parts"
DEFAULT_PART_FILES = 1000
_MANIFEST = "manifest.json"


class Rank(NamedTuple):
    """Where this process stands in an extraction: its rank, the number of ranks, and
    the device its model runs on (None: the model's default)."""

    rank: int = 0
    world_size: int = 1
    device: str = None


def cpu_cores():
    """Cores this process may run on (its CPU affinity, e.g. a container's or a job's
    share, rather than the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS and Windows
        return os.cpu_count() or 1


def join_torchrun(device=None, environ=None):
    """This process's rank and device: joins the process group of a torchrun launch,
    or one rank when not launched by torchrun.

    Arguments
    ---------
    device : str, optional
        ``cpu``, or ``cuda``/``cuda:<k>`` (under torchrun: the GPU of the local rank,
        whatever index is given); default: GPUs if there are any.
    environ : dict, optional
        The environment (default: ``os.environ``) with torchrun's ``RANK``,
        ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``.

    Returns
    -------
    Rank

    Example
    -------
    >>> join_torchrun("cpu", environ={})
    Rank(rank=0, world_size=1, device='cpu')
    """
    environ = os.environ if environ is None else environ
    if "RANK" not in environ or "LOCAL_RANK" not in environ:
        return Rank(device=device)
    rank, local_rank = int(environ["RANK"]), int(environ["LOCAL_RANK"])
    local_ranks = int(environ.get("LOCAL_WORLD_SIZE", environ.get("WORLD_SIZE", 1)))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = device.startswith("cuda")
    if on_gpu:
        device = f"cuda:{local_rank}"
    else:
        # torchrun sets OMP_NUM_THREADS=1; the ranks of a node share its cores instead.
        torch.set_num_threads(max(1, cpu_cores() // local_ranks))
    ddp_init_group({"distributed_backend": "nccl" if on_gpu else "gloo"})
    return Rank(rank, torch.distributed.get_world_size(), device)


def balance_by_duration(durations, num_ranks):
    """Deals items to ranks, longest first, each to the rank with the least so far.

    Deterministic (ties go to the lower index and the lower rank), and the ranks'
    totals differ by at most the longest item.

    Arguments
    ---------
    durations : sequence of float
        Duration (or any cost) of each item.
    num_ranks : int
        Number of ranks.

    Returns
    -------
    list of list of int
        The items of each rank, in the order they were dealt (longest first).
    """
    heap = [(0.0, rank) for rank in range(num_ranks)]
    dealt = [[] for _ in range(num_ranks)]
    for item in sorted(range(len(durations)), key=lambda i: (-durations[i], i)):
        total, rank = heapq.heappop(heap)
        dealt[rank].append(item)
        heapq.heappush(heap, (total + durations[item], rank))
    return dealt


def part_ranges(num_files, part_files=DEFAULT_PART_FILES):
    """``(start, stop)`` of each part of a list: ``part_files`` consecutive files each."""
    if part_files < 1:
        raise ValueError(f"part_files must be at least 1, got {part_files}")
    return [(s, min(s + part_files, num_files)) for s in range(0, num_files, part_files)]


def parts_folder(output):
    """The folder of an output's parts: ``<output>.parts``."""
    return pathlib.Path(os.fspath(output).rstrip("/\\") + PARTS_SUFFIX)


def check_store_output(output):
    """Stops before any work when ``output`` names an existing folder that is not an
    embedding store: writing a store replaces its folder."""
    if os.path.exists(output) and not is_store(output):
        raise ValueError(
            f"--output {output} exists and is not an embedding store; name a new folder"
        )


def _all_gather(obj, ranks):
    if ranks.world_size == 1:
        return [obj]
    gathered = [None] * ranks.world_size
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def _stop(error, ranks):
    """Rank 0 raises ``error`` (one message); the others wait for the launcher, which
    ends every rank once rank 0 has exited."""
    if ranks.rank == 0:
        raise error
    try:
        torch.distributed.barrier()
    except RuntimeError:  # rank 0's exit closed the group
        pass
    raise SystemExit(1)


def check_list(paths, ranks, num_workers=0):
    """Durations of every file, each rank reading the headers of 1/N of them (only the
    durations travel); an unusable file stops every rank, rank 0 naming the files.

    Returns
    -------
    numpy.ndarray
        [len(paths)] durations in seconds.
    """
    from speechbrain_w2vbert_sv.inference.verification import check_files

    mine = paths[ranks.rank :: ranks.world_size]
    infos, _ = check_audio_files(mine, read_samples=False, num_workers=num_workers)
    found = np.array([infos[p].duration if p in infos else np.nan for p in mine])
    durations = np.empty(len(paths))
    for rank, seconds in enumerate(_all_gather(found, ranks)):
        durations[rank :: ranks.world_size] = seconds
    bad = np.flatnonzero(np.isnan(durations))
    if len(bad):
        try:  # the usual report, from a second look at the bad files only
            again = check_files(file_lists=[("inputs", [paths[i] for i in bad])])
        except ValueError as error:
            _stop(error, ranks)
        durations[bad] = [again[paths[i]] for i in bad]  # readable by now
    return durations


def _list_key(paths, part_files, identity):
    digest = hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()
    return {"files": len(paths), "part_files": part_files, "list_sha256": digest, **identity}


def finished_parts(folder, key):
    """The indices of the parts already written for this list, after checking that
    the folder's parts are of this list, model and part size (``key``); creates the
    folder, and its manifest (``key``) where it holds no part."""
    manifest = folder / _MANIFEST
    names = {p.name for p in folder.glob("part-*.pt")}
    if names and json.loads(manifest.read_text(encoding="utf-8")) != key:
        raise ValueError(
            f"{folder} holds the parts of another run (list, model, precision or "
            "--part_files differ); delete it to start again"
        )
    if not names:
        folder.mkdir(parents=True, exist_ok=True)
        _replace_atomically(manifest, lambda f: f.write(json.dumps(key, indent=1).encode("utf-8")))
    return [j for j in range(-(-key["files"] // key["part_files"])) if _part_name(j) in names]


def _remove_if_partless(folder):
    """Removes a parts folder that a failed run left without any part."""
    if folder.is_dir() and not any(folder.glob("part-*.pt")):
        shutil.rmtree(folder, ignore_errors=True)


def _part_name(index):
    return f"part-{index:06d}.pt"


def _replace_atomically(path, write):
    """Writes ``path`` through ``write(file)`` to a temporary file beside it, then
    renames: a kill leaves the old file or the new one, never a piece."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def embed_parts(
    model,
    ids,
    paths,
    parts,
    todo,
    folder,
    durations,
    sample_rate=16000,
    batch_seconds=200.0,
    max_batch_size=64,
    max_padding=0.2,
    **options,
):
    """Embeds the given parts of a list, writing each part's file once it is complete.

    Arguments
    ---------
    model : callable
        ``(wavs, wav_lens) -> embeddings`` (see ``extraction.embed_batches``).
    ids, paths : list of str
        Names and files of the whole list.
    parts : list of (int, int)
        Row range of every part (``part_ranges``).
    todo : list of int
        The parts to embed.
    folder : pathlib.Path
        Where part files go.
    durations : numpy.ndarray
        Seconds of each file of the list (``check_list``).
    sample_rate : int
        Rate of the model.
    batch_seconds, max_batch_size, max_padding :
        Batching within each part (see ``extraction.make_batches``).
    **options
        ``precision``, ``device``, ``num_workers``, ``progress`` (``embed_batches``).
    """
    batching = {
        "batch_seconds": batch_seconds,
        "max_batch_size": max_batch_size,
        "max_padding": max_padding,
    }
    batches, part_of_batch = [], []
    for j in todo:
        start, stop = parts[j]
        samples = [int(round(d * sample_rate)) for d in durations[start:stop]]
        for batch in make_batches(samples, sample_rate=sample_rate, **batching):
            batches.append([start + i for i in batch])
            part_of_batch.append(j)
    left = {j: parts[j][1] - parts[j][0] for j in todo}
    tables = {}
    for k, (indices, embeddings) in enumerate(
        embed_batches(model, paths, batches, sample_rate, **options)
    ):
        j = part_of_batch[k]
        start, stop = parts[j]
        if j not in tables:
            tables[j] = torch.empty(stop - start, embeddings.shape[1])
        tables[j][indices - start] = embeddings
        left[j] -= len(indices)
        if left[j] == 0:
            part = {"ids": ids[start:stop], "embeddings": tables.pop(j)}
            _replace_atomically(folder / _part_name(j), lambda f: torch.save(part, f))


def _read_part(folder, index, ids):
    part = torch.load(folder / _part_name(index), weights_only=True)
    if part["ids"] != ids:
        raise ValueError(
            f"{folder / _part_name(index)} holds other files than the list's part {index}; "
            f"delete {folder} to start again"
        )
    return part["embeddings"]


def merge_parts(folder, parts, ids, paths, output, kind, meta):
    """Writes the parts, in the list's order, to ``output``, atomically: ``kind`` ``npz``
    (``ids``, ``embeddings``), ``pt`` (``{"ids", "paths", "embeddings"}``) or ``store``
    (an embedding store, written part by part); returns the embedding size."""
    output = pathlib.Path(output)
    if kind == "store":
        size = _read_part(folder, 0, ids[slice(*parts[0])]).shape[1]
        with EmbeddingStoreWriter(output, len(ids), size, meta=meta) as writer:
            for j, (start, stop) in enumerate(parts):
                writer.write(start, ids[start:stop], _read_part(folder, j, ids[start:stop]))
        return size
    table = torch.cat([_read_part(folder, j, ids[a:b]) for j, (a, b) in enumerate(parts)])
    output.parent.mkdir(parents=True, exist_ok=True)
    if kind == "npz":
        _replace_atomically(
            output, lambda f: np.savez(f, ids=np.array(ids), embeddings=table.numpy())
        )
    else:
        content = {"ids": ids, "paths": paths, "embeddings": table}
        _replace_atomically(output, lambda f: torch.save(content, f))
    return table.shape[1]


def extract_list(
    ids,
    paths,
    output,
    kind,
    load_model,
    ranks=Rank(),
    identity=None,
    meta=None,
    part_files=DEFAULT_PART_FILES,
    num_workers=0,
    progress=True,
    **options,
):
    """Embeds a file list on every rank of a launch into one output, resumably.

    Arguments
    ---------
    ids : list of str
        Distinct names of the files (the output's ids, in this order).
    paths : list of str
        The files.
    output : str or os.PathLike
        The file or store folder to write.
    kind : str
        ``npz``, ``pt`` or ``store`` (see ``merge_parts``).
    load_model : callable
        ``() -> W2VBertSpeakerRecognition`` (called only on ranks with parts to do).
    ranks : Rank
        This process's rank, the number of ranks and its device (``join_torchrun``).
    identity : dict, optional
        What else makes the embeddings (model, precision): parts written under
        another identity are not reused.
    meta : dict, optional
        Metadata of a store output.
    part_files : int
        Files per part.
    num_workers : int
        Processes reading audio (per rank).
    progress : bool
        Show rank 0's progress bar.
    **options
        ``batch_seconds``, ``max_batch_size``, ``max_padding`` of ``make_batches``.

    Returns
    -------
    int or None
        Embedding size on rank 0 (which writes the output), None on the others.
    """
    if not ids:
        raise ValueError("no files to embed")
    if kind == "store":
        check_store_output(output)
    durations = check_list(paths, ranks, num_workers)
    parts = part_ranges(len(ids), part_files)
    folder = parts_folder(output)
    answer = None
    if ranks.rank == 0:
        try:
            answer = finished_parts(folder, _list_key(paths, part_files, identity or {}))
        except ValueError as error:
            answer = str(error)
    answer = ddp_broadcast(answer)
    if isinstance(answer, str):
        _stop(ValueError(answer), ranks)
    todo = sorted(set(range(len(parts))) - set(answer))
    seconds = [float(durations[a:b].sum()) for a, b in (parts[j] for j in todo)]
    mine = sorted(todo[i] for i in balance_by_duration(seconds, ranks.world_size)[ranks.rank])
    if ranks.rank == 0 and answer:
        logger.warning("%s: %d of %d parts already done, kept", folder, len(answer), len(parts))
    try:
        if mine:
            model = load_model()
            embed_parts(
                model.mods.embedding_model,
                ids,
                paths,
                parts,
                mine,
                folder,
                durations,
                model.hparams.sample_rate,
                precision=model.precision,
                device=model.device,
                num_workers=num_workers,
                progress=progress and ranks.rank == 0,
                **options,
            )
    except BaseException:
        if ranks.rank == 0:  # e.g. a model that does not load: no litter
            _remove_if_partless(folder)
        raise
    ddp_barrier()
    if ranks.rank != 0:
        return None
    size = merge_parts(folder, parts, ids, paths, output, kind, meta or {})
    shutil.rmtree(folder)
    return size
