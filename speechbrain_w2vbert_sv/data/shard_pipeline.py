"""Training from WebDataset shards (:mod:`speechbrain_w2vbert_sv.data.shards`): the
items of the file path (:func:`~speechbrain_w2vbert_sv.data.pipeline.make_train_dataset`:
same random crops, speed factors as classes, speaker -> index map) streamed from tars.

How the shards are shared out, each epoch:

- the shard list is shuffled (seed and epoch: the same on every process), then dealt
  out: process ``rank`` takes ``order[rank::world_size]`` and its DataLoader worker
  ``w`` of ``W`` takes ``[w::W]`` of those (:func:`split_shards`: the slices of
  webdataset's ``split_by_node``/``split_by_worker``, written here as one pure function
  of the epoch, rank and worker so that a resumed run finds each worker's shards
  again); fewer shards than ``world_size x W`` is refused, and a split whose workers'
  sample counts differ by more than 10 % is warned about;
- every worker yields the same number of samples, ``total // (world_size x W x
  batch)`` batches' worth, reading its shards in turn (from the start again if they
  run out, stopping when it has enough), through a shuffle buffer: all processes then
  run the same number of steps, as DDP needs;
- resume after a kill (:class:`ShardLoader`, a Checkpointer recoverable): an
  intra-epoch checkpoint records the epoch, the batches done and the shards each
  worker had read to the end; the resumed epoch skips those shards and yields the
  batches still due. The position is exact to the nearest shard: the samples of a
  shard read in part are read again, and those still in the shuffle buffer at the
  kill are not seen this epoch.
"""

import io
import itertools
import json
import pathlib
import random

import soundfile
import torch
import webdataset
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.logger import get_logger
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from speechbrain_w2vbert_sv.data.audio import mono_waveform
from speechbrain_w2vbert_sv.data.pipeline import (
    crop_range,
    random_training_crop,
    speaker_label_encoder,
    speed_factor_order,
)
from speechbrain_w2vbert_sv.data.shards import manifest_path, read_manifest

logger = get_logger(__name__)

# Workers whose sample counts differ by more than this are warned about.
UNEVEN_TOLERANCE = 0.10
# A worker gives up after this many unusable samples in a row (broken shards).
MAX_FAILURES_IN_A_ROW = 100


def split_shards(shards, rank, world_size, worker=0, num_workers=1):
    """The shards of one process and DataLoader worker: ``[rank::world_size][worker::num_workers]``.

    Arguments
    ---------
    shards : list
        The epoch's shard order (the same on every process).
    rank, world_size : int
        This process and the number of processes.
    worker, num_workers : int
        This DataLoader worker and the number of workers (0 workers count as 1).

    Returns
    -------
    list

    Example
    -------
    >>> [split_shards(list(range(8)), r, 2, w, 2) for r in (0, 1) for w in (0, 1)]
    [[0, 4], [2, 6], [1, 5], [3, 7]]
    """
    return shards[rank::world_size][worker :: max(1, num_workers)]


def check_shard_split(counts, world_size, num_workers):
    """Refuses shards too few for every process and worker; warns when they divide
    unevenly (some samples are then cut, others read twice, to keep processes in step).

    Arguments
    ---------
    counts : list of int
        Samples of each shard.
    world_size, num_workers : int
        Processes, and DataLoader workers per process (0 counts as 1).

    Returns
    -------
    list of int
        Samples of each worker (``rank``-major).

    Example
    -------
    >>> check_shard_split([100, 100, 100, 100], 2, 2)
    [100, 100, 100, 100]
    >>> check_shard_split([100, 100, 100], 2, 2)
    Traceback (most recent call last):
    ...
    ValueError: 3 shards cannot feed 2 processes x 2 DataLoader workers ...
    """
    workers = world_size * max(1, num_workers)
    if len(counts) < workers:
        raise ValueError(
            f"{len(counts)} shards cannot feed {world_size} processes x "
            f"{max(1, num_workers)} DataLoader workers (each needs a shard of its own): "
            "write smaller shards (--shard_size_mb) or use fewer workers"
        )
    totals = [
        sum(split_shards(counts, rank, world_size, worker, num_workers))
        for rank in range(world_size)
        for worker in range(max(1, num_workers))
    ]
    if max(totals) > (1 + UNEVEN_TOLERANCE) * min(totals):
        logger.warning(
            "The %d shards divide unevenly over %d processes x %d workers (%d to %d samples "
            "each): every worker reads the same number, cutting or repeating samples; a "
            "multiple of %d shards avoids it",
            len(counts),
            world_size,
            max(1, num_workers),
            min(totals),
            max(totals),
            workers,
        )
    return totals


def find_shards(spec):
    """The shards named by a pattern or list, checked against their manifest.

    Arguments
    ---------
    spec : str or list of str
        ``<folder>/train-{000000..000099}.tar`` (brace ranges), one shard, or a list.

    Returns
    -------
    shards : list of tuple
        ``(path, samples)`` of each shard.
    manifest : dict
        The shards' manifest (:func:`~speechbrain_w2vbert_sv.data.shards.read_manifest`).
    """
    specs = [spec] if isinstance(spec, (str, pathlib.Path)) else list(spec or [])
    paths = [p for s in specs for p in webdataset.shardlists.expand_urls(str(s))]
    if not paths:
        raise ValueError("data_format shards needs --shards=<folder>/<prefix>-{000000..N}.tar")
    manifests = {manifest_path(p) for p in paths}
    if len(manifests) != 1:
        raise ValueError(f"--shards names shards of {len(manifests)} manifests: give one set")
    (manifest_file,) = manifests
    manifest = read_manifest(manifest_file)
    listed = {s["name"]: s for s in manifest["shards"]}
    shards = []
    for path in paths:
        entry = listed.get(pathlib.Path(path).name)
        if entry is None:
            raise ValueError(f"{path}: not in its manifest {manifest_file}")
        try:
            size = pathlib.Path(path).stat().st_size
        except FileNotFoundError:
            raise ValueError(f"{path}: missing shard") from None
        if size != entry["bytes"]:
            raise ValueError(
                f"{path}: {size} bytes, its manifest says {entry['bytes']} (partly copied?)"
            )
        shards.append((str(path), entry["samples"]))
    if len(shards) < len(listed):
        logger.info(
            "Training on %d of the %d shards of %s", len(shards), len(listed), manifest_file
        )
    return shards, manifest


def _flac_reader(flac, sample_rate):
    """``read(offset, duration)`` of FLAC bytes (only the segment is decoded)."""

    def read(offset, duration):
        with soundfile.SoundFile(io.BytesIO(flac)) as f:
            f.seek(min(int(round(offset * f.samplerate)), f.frames))
            data = f.read(int(round(duration * f.samplerate)), dtype="float32", always_2d=True)
            return mono_waveform(data, f.samplerate, sample_rate)

    return read


class ShardTrainDataset(IterableDataset):
    """Training items (``id``, ``sig``, ``spk_label``, ``spk_id``) streamed from shards.

    See the module docstring for the split, the epoch length and the resume rule.
    :class:`ShardLoader` sets the epoch (and the resume position) before each pass.

    Arguments
    ---------
    shards : list of tuple
        ``(path, samples)`` (:func:`find_shards`).
    encoder : speechbrain.dataio.encoder.CategoricalEncoder
        Speaker -> index.
    crop_seconds : float or sequence of two floats
        As in :func:`~speechbrain_w2vbert_sv.data.pipeline.make_train_dataset`.
    speed_perturb : sequence of float or None
        Speed factors (each a block of classes).
    sample_rate : int
        Rate of the crops.
    batch_size : int
        Batch size of the DataLoader (each worker yields whole batches).
    num_workers : int
        DataLoader workers per process.
    shuffle_buffer : int
        Samples held in each worker's shuffle buffer (0: the shards' order).
    seed : int
        Seed of the shard order of each epoch and of the buffers.
    rank, world_size : int
        This process and the number of processes (default: torch.distributed's).
    augment : callable, optional
        Applied to each crop in the workers, as in ``make_train_dataset`` (the recipe
        augments batches on the device instead).
    """

    def __init__(
        self,
        shards,
        encoder,
        crop_seconds=3.0,
        speed_perturb=(0.9, 1.0, 1.1),
        sample_rate=16000,
        batch_size=1,
        num_workers=0,
        shuffle_buffer=1000,
        seed=1234,
        rank=None,
        world_size=None,
        augment=None,
    ):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = (
            rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        )
        self.world_size = world_size or (torch.distributed.get_world_size() if distributed else 1)
        self.shards = list(shards)
        self.num_workers = max(1, num_workers)
        self.batch_size = batch_size
        check_shard_split([n for _, n in self.shards], self.world_size, num_workers)
        total = sum(n for _, n in self.shards)
        self.batches_per_worker = total // (self.world_size * self.num_workers * batch_size)
        if self.batches_per_worker == 0:
            raise ValueError(
                f"{total} training samples are fewer than {self.world_size} processes x "
                f"{self.num_workers} workers x batch {batch_size}"
            )
        self.encoder = encoder
        self.factors = speed_factor_order(speed_perturb)
        self.crop_samples = int(round(crop_range(crop_seconds)[1] * sample_rate))
        self.sample_rate = sample_rate
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.augment = augment
        self.epoch = 1
        self.start_batch = 0

    def __len__(self):
        """Samples of one epoch on this process."""
        return self.batches_per_worker * self.num_workers * self.batch_size

    def set_epoch(self, epoch, start_batch=0):
        """The epoch of the next pass, and the batches of it already done (resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def _worker_stream(self, rank, worker):
        """The worker's shards (``(path, samples)``) of the epoch, in reading order."""
        order = list(self.shards)
        random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        return itertools.cycle(split_shards(order, rank, self.world_size, worker, self.num_workers))

    def _batches_done(self, worker):
        """Batches worker ``worker`` yielded before ``start_batch`` (DataLoader takes
        them from the workers in turn)."""
        done, extra = divmod(self.start_batch, self.num_workers)
        return done + (worker < extra)

    def shards_read(self, rank, worker):
        """The shards a worker had read to the end at ``start_batch`` (skipped on resume).

        Returns
        -------
        list of str
            Paths, in reading order (a shard may come twice when the worker's shards
            ran out and were read again).
        """
        seen, read = self._batches_done(worker) * self.batch_size, []
        for path, samples in self._worker_stream(rank, worker):
            if seen < samples:
                return read
            seen -= samples
            read.append(path)
        return read  # no shard at all (refused by check_shard_split)

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        stream = self._worker_stream(self.rank, worker)
        skipped = self.shards_read(self.rank, worker)
        stream = itertools.islice(stream, len(skipped), None)
        wanted = (self.batches_per_worker - self._batches_done(worker)) * self.batch_size
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}-{self.start_batch}")
        samples = webdataset.tarfile_to_samples()({"url": path} for path, _ in stream)
        if self.shuffle_buffer > 0:
            samples = webdataset.shuffle(self.shuffle_buffer, rng=rng)(samples)
        yielded, failed = 0, 0
        for sample in samples:
            if yielded >= wanted:
                return
            item = self._item(sample)
            if item is None:
                failed += 1
                if failed > MAX_FAILURES_IN_A_ROW:
                    raise RuntimeError(
                        f"{failed} unusable samples in a row in {sample.get('__url__')}: "
                        "see the warnings above"
                    )
                continue
            failed = 0
            yielded += 1
            yield item

    def _item(self, sample):
        """A training item of a shard sample; None (with a warning) if it is unusable."""
        try:
            meta = json.loads(sample["json"])
            wav, k = random_training_crop(
                _flac_reader(sample["flac"], self.sample_rate),
                float(meta["duration"]),
                self.crop_samples,
                self.factors,
                self.sample_rate,
                self.augment,
            )
        except (KeyError, ValueError, RuntimeError, soundfile.LibsndfileError) as error:
            logger.warning(
                "Skipping sample %s of %s: %s",
                sample.get("__key__"),
                sample.get("__url__"),
                error,
                main_process_only=False,
            )
            return None
        label = self.encoder.encode_label(meta["spk_id"]) + k * len(self.encoder)
        return {
            "id": meta["id"],
            "sig": wav,
            "spk_label": torch.LongTensor([label]),
            "spk_id": meta["spk_id"],
        }


@register_checkpoint_hooks
class ShardLoader(DataLoader):
    """A DataLoader of a :class:`ShardTrainDataset` that a checkpoint resumes mid-epoch.

    Each pass is the epoch of ``epoch_counter`` (``current``, as the training loop
    sets it; without one, passes count 1, 2, ...). An intra-epoch checkpoint saves the
    epoch, the batches yielded and the shards read; once loaded, the next pass of
    that epoch skips those shards and yields only the batches still due.

    Arguments
    ---------
    dataset : ShardTrainDataset
        The items.
    epoch_counter : speechbrain.utils.epoch_loop.EpochCounter, optional
        The training loop's epoch counter.
    **loader_kwargs : dict
        DataLoader options (``batch_size`` and ``num_workers`` as the dataset's;
        ``collate_fn`` defaults to SpeechBrain's ``PaddedBatch``).
    """

    def __init__(self, dataset, epoch_counter=None, **loader_kwargs):
        loader_kwargs.setdefault("collate_fn", PaddedBatch)
        super().__init__(dataset, **loader_kwargs)
        self.epoch_counter = epoch_counter
        self._resume = None
        self._epoch = 0
        self._yielded = 0

    def __len__(self):
        """Batches of a whole epoch."""
        return self.dataset.batches_per_worker * self.dataset.num_workers

    def __iter__(self):
        epoch = self.epoch_counter.current if self.epoch_counter is not None else self._epoch + 1
        start = 0
        if self._resume is not None and self._resume[0] == epoch:
            start = self._resume[1]
            logger.info(
                "Resuming epoch %d after %d of its %d batches (to the nearest shard)",
                epoch,
                start,
                len(self),
            )
        self._resume = None
        self.dataset.set_epoch(epoch, start)
        self._epoch, self._yielded = epoch, start
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    @mark_as_saver
    def _save(self, path):
        data = self.dataset
        resumed = (data.epoch, data.start_batch)
        data.set_epoch(self._epoch, self._yielded)
        read = {
            f"rank{rank}-worker{worker}": data.shards_read(rank, worker)
            for rank in range(data.world_size)
            for worker in range(data.num_workers)
        }
        data.set_epoch(*resumed)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"epoch": self._epoch, "batches": self._yielded, "shards_read": read}, f)

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        if end_of_epoch:
            return  # the next epoch starts from its beginning
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        self._resume = (saved["epoch"], saved["batches"])


def make_shard_train_loader(
    shards,
    crop_seconds=3.0,
    speed_perturb=(0.9, 1.0, 1.1),
    sample_rate=16000,
    label_encoder_file=None,
    loader_options=None,
    shuffle_buffer=1000,
    seed=1234,
    epoch_counter=None,
):
    """The training DataLoader of ``train.py --data_format=shards``.

    Arguments
    ---------
    shards : str or list of str
        Shard pattern(s), as :func:`find_shards`.
    crop_seconds, speed_perturb, sample_rate, label_encoder_file
        As in :func:`~speechbrain_w2vbert_sv.data.pipeline.make_train_dataset`; the
        speakers are the manifest's.
    loader_options : dict, optional
        The recipe's ``train_dataloader_options`` (``shuffle``, ``sampler`` and
        ``persistent_workers`` do not apply).
    shuffle_buffer : int
        Samples in each worker's shuffle buffer.
    seed : int
        Seed of the shard orders and buffers.
    epoch_counter : speechbrain.utils.epoch_loop.EpochCounter, optional
        The training loop's epoch counter.

    Returns
    -------
    loader : ShardLoader
        Add it to the Checkpointer to resume mid-epoch.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        Base speakers.
    num_classes : int
        Speakers x speed factors.

    Example
    -------
    >>> import numpy
    >>> from speechbrain_w2vbert_sv.data.csv_io import write_csv
    >>> from speechbrain_w2vbert_sv.data.shards import write_shards
    >>> folder = getfixture("tmp_path")
    >>> rows = []
    >>> for i in range(8):
    ...     noise = numpy.random.default_rng(i).standard_normal(8000) * 0.1  # 15 kB as FLAC
    ...     soundfile.write(folder / f"{i}.wav", noise, 16000)
    ...     rows.append({"ID": f"u{i}", "wav": folder / f"{i}.wav", "spk_id": f"s{i % 2}"})
    >>> write_csv(folder / "train.csv", rows)
    >>> _ = write_shards(folder / "train.csv", folder / "shards", shard_size_mb=0.02)  # 2 a shard
    >>> loader, encoder, num_classes = make_shard_train_loader(
    ...     str(folder / "shards" / "train-{000000..000003}.tar"), crop_seconds=0.2,
    ...     loader_options={"batch_size": 2, "shuffle": True})
    >>> batches = list(loader)
    >>> len(batches), batches[0].sig.data.shape, num_classes
    (4, torch.Size([2, 3200]), 6)
    """
    found, manifest = find_shards(shards)
    encoder = speaker_label_encoder(
        manifest["speakers"], label_encoder_file, manifest_path(found[0][0])
    )
    # Shuffling is the shard order's and the buffers'; workers start anew each epoch,
    # taking the epoch and its resume position with them (so none persists).
    dropped = ("shuffle", "sampler", "persistent_workers")
    options = {k: v for k, v in dict(loader_options or {}).items() if k not in dropped}
    options.setdefault("batch_size", 1)
    dataset = ShardTrainDataset(
        found,
        encoder,
        crop_seconds=crop_seconds,
        speed_perturb=speed_perturb,
        sample_rate=sample_rate,
        batch_size=options["batch_size"],
        num_workers=options.get("num_workers", 0),
        shuffle_buffer=shuffle_buffer,
        seed=seed,
    )
    loader = ShardLoader(dataset, epoch_counter=epoch_counter, **options)
    return loader, encoder, len(encoder) * len(dataset.factors)
