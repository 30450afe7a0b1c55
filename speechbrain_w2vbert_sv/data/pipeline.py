"""Training and evaluation data pipelines as SpeechBrain ``DynamicItemDataset``.

Training items are random crops of a fixed length; a file shorter than the crop is
repeated (wrapped around) up to it, so every crop is real speech with no zero
padding. A crop range ``[shortest, longest]`` crops items at the longest length and
each training batch to one random length in the range (:func:`random_batch_crop`):
varied durations without padding. Speed perturbation changes tempo and pitch
together (resampling, like sox ``speed``); each factor other than 1.0 makes new
speaker classes: ``label = speaker_index + k * num_speakers`` where ``k`` is the
factor's position in ``speed_perturb`` once 1.0 is moved first, so (0.9, 1.0, 1.1)
gives 3x the classes (k = 0 for 1.0, 1 for 0.9, 2 for 1.1).

Example
-------
>>> speed_factor_order((0.9, 1.0, 1.1))
[1.0, 0.9, 1.1]
"""

import functools
import os
import pathlib
import random

import torch
import torchaudio
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.audio import AudioFileError, audio_info, load_audio
from speechbrain_w2vbert_sv.data.csv_io import path_to_id, read_csv, read_file_list

logger = get_logger(__name__)


def speed_factor_order(speed_perturb):
    """Speed factors in class-block order: 1.0 (if present) first, then the others.

    Arguments
    ---------
    speed_perturb : sequence of float or None
        Speed factors (None: no perturbation).

    Returns
    -------
    list of float
    """
    factors = [float(f) for f in (speed_perturb or (1.0,))]
    if any(f <= 0 for f in factors) or len(set(factors)) != len(factors):
        raise ValueError(f"speed_perturb must hold distinct positive factors, got {speed_perturb}")
    return sorted(factors, key=lambda f: f != 1.0)


def speed_perturb_wav(wav, factor, sample_rate=16000):
    """Plays a waveform ``factor`` times faster (tempo and pitch), by resampling.

    Arguments
    ---------
    wav : torch.Tensor
        Waveform ``[S]``.
    factor : float
        Speed factor (> 1: faster and shorter).
    sample_rate : int
        Rate of the waveform.

    Returns
    -------
    torch.Tensor
        Waveform of about ``S / factor`` samples.

    Example
    -------
    >>> speed_perturb_wav(torch.randn(16000), 1.1).shape
    torch.Size([14546])
    """
    if factor == 1.0:
        return wav
    return torchaudio.functional.resample(wav, int(round(sample_rate * factor)), sample_rate)


def crop_range(crop_seconds):
    """The shortest and longest training crop of a length or a range.

    Arguments
    ---------
    crop_seconds : float or sequence of two floats
        A crop length in seconds, or ``[shortest, longest]``.

    Returns
    -------
    tuple of float
        ``(shortest, longest)``.

    Example
    -------
    >>> crop_range(3.0), crop_range([2, 3])
    ((3.0, 3.0), (2.0, 3.0))
    """
    if isinstance(crop_seconds, (int, float)):
        shortest = longest = float(crop_seconds)
    else:
        values = [float(v) for v in crop_seconds]
        if len(values) != 2:
            raise ValueError(
                f"crop_seconds must be a length or [shortest, longest], got {crop_seconds}"
            )
        shortest, longest = values
    if not 0 < shortest <= longest:
        raise ValueError(
            f"crop_seconds must be positive, with shortest <= longest, got {crop_seconds}"
        )
    return shortest, longest


def random_batch_crop(wavs, crop_seconds, sample_rate=16000):
    """Cuts a batch of full-length training crops to one random length in the range.

    The items are random windows already, so their first samples are too; one length
    per batch keeps it free of padding (relative lengths stay 1).

    Arguments
    ---------
    wavs : torch.Tensor
        ``[batch, samples]`` crops of the longest length.
    crop_seconds : float or sequence of two floats
        As in :func:`crop_range`; a single length leaves the batch as it is.
    sample_rate : int
        Rate of the waveforms.

    Returns
    -------
    torch.Tensor
        ``[batch, samples']``, a view of ``wavs``.

    Example
    -------
    >>> crops = random_batch_crop(torch.zeros(4, 48000), [2.0, 3.0])
    >>> 32000 <= crops.shape[1] <= 48000
    True
    """
    shortest, longest = crop_range(crop_seconds)
    if shortest == longest:
        return wavs
    length = int(round(random.uniform(shortest, longest) * sample_rate))
    return wavs[:, : max(1, min(length, wavs.shape[1]))]


def random_training_crop(read, duration, crop_samples, factors, sample_rate=16000, augment=None):
    """A random crop of an utterance at a random speed factor, wrapped around to the
    crop length and augmented: one training item, whatever stores the audio.

    Arguments
    ---------
    read : callable
        ``read(offset=seconds, duration=seconds)`` -> waveform ``[S]`` at
        ``sample_rate`` (a segment cut at the end of the utterance).
    duration : float
        Length of the utterance, in seconds.
    crop_samples : int
        Length of the crop.
    factors : list of float
        Speed factors in class-block order (:func:`speed_factor_order`).
    sample_rate : int
        Rate of the waveforms.
    augment : callable, optional
        Applied as ``augment(wav[None], torch.ones(1))[0]``.

    Returns
    -------
    wav : torch.Tensor
        ``[crop_samples]``.
    k : int
        Position of the drawn factor in ``factors`` (its block of classes).

    Example
    -------
    >>> wav = torch.arange(8000.0)
    >>> read = lambda offset, duration: wav[int(offset * 16000) :][: int(duration * 16000)]
    >>> crop, k = random_training_crop(read, 0.5, 16000, [1.0])
    >>> crop.shape, k, crop[8000].item()  # wrapped around
    (torch.Size([16000]), 0, 0.0)
    """
    k = random.randrange(len(factors))
    factor = factors[k]
    # Read crop * factor seconds so that, once sped up, exactly a crop remains.
    need = crop_samples * factor / sample_rate
    offset = random.uniform(0.0, duration - need) if duration > need else 0.0
    wav = speed_perturb_wav(read(offset=offset, duration=need), factor, sample_rate)
    wav = wav.repeat(-(-crop_samples // wav.numel()))[:crop_samples]
    if augment is not None:
        wav = augment(wav.unsqueeze(0), torch.ones(1))[0]
    return wav, k


def speaker_label_encoder(speakers, label_encoder_file=None, source=None):
    """The speaker -> index encoder of a training run: speakers in sorted order, or
    the run's saved encoder (so a resumed run, or a later stage, keeps its labels).

    Arguments
    ---------
    speakers : iterable of str
        The training speakers.
    label_encoder_file : str or os.PathLike, optional
        Where the encoder is saved, or loaded from when it exists.
    source : str, optional
        What the speakers come from (for the error message).

    Returns
    -------
    speechbrain.dataio.encoder.CategoricalEncoder

    Example
    -------
    >>> speaker_label_encoder(["b", "a", "b"]).lab2ind
    {'a': 0, 'b': 1}
    """
    speakers = sorted(set(speakers))
    encoder = CategoricalEncoder()
    if label_encoder_file is not None:
        encoder.load_or_create(label_encoder_file, from_iterables=[speakers])
    else:
        encoder.update_from_iterable(speakers)
    encoder.expect_len(len(encoder))
    unknown = set(speakers) - set(encoder.lab2ind)
    if unknown:
        raise ValueError(
            f"{source}: speakers {sorted(unknown)[:5]} are not in the label encoder "
            f"{label_encoder_file} (prepared from another corpus?)"
        )
    return encoder


class _TrainItemLoader:
    """Loads a random crop of an utterance with its (speed-expanded) label.

    A file that fails to load is logged once (per process) and replaced by another
    random utterance, whose label is then returned, so one bad file does not stop a
    run.
    """

    def __init__(self, rows, crop_seconds, factors, sample_rate, encoder, augment, retries):
        self.rows = rows
        self.ids = list(rows)
        self.crop_samples = int(round(crop_seconds * sample_rate))
        self.factors = factors
        self.sample_rate = sample_rate
        self.encoder = encoder
        self.num_speakers = len(encoder)
        self.augment = augment
        self.retries = retries
        self.failed = set()

    def __call__(self, utt_id):
        for _ in range(self.retries):
            try:
                return self._load(utt_id)
            except AudioFileError as error:
                if utt_id not in self.failed:
                    self.failed.add(utt_id)
                    # Each process loads its own shard: report on every rank, not rank 0 only.
                    logger.warning(
                        "Replacing a training utterance that failed to load: %s",
                        error,
                        main_process_only=False,
                    )
                usable = len(self.ids) - len(self.failed)
                if usable <= 0:
                    break
                while utt_id in self.failed:
                    utt_id = random.choice(self.ids)
        raise RuntimeError(
            f"{len(self.failed)} training file(s) failed to load and no replacement loaded "
            f"after {self.retries} tries; see the warnings above"
        )

    def _load(self, utt_id):
        row = self.rows[utt_id]
        wav, k = random_training_crop(
            functools.partial(load_audio, row["wav"], self.sample_rate),
            float(row["duration"]),
            self.crop_samples,
            self.factors,
            self.sample_rate,
            self.augment,
        )
        label = self.encoder.encode_label(row["spk_id"]) + k * self.num_speakers
        return wav, torch.LongTensor([label]), row["spk_id"]


def make_train_dataset(
    csv_file,
    crop_seconds=3.0,
    speed_perturb=(0.9, 1.0, 1.1),
    sample_rate=16000,
    label_encoder_file=None,
    augment=None,
    retries=10,
):
    """Training dataset of random fixed-length crops with speaker labels.

    Each fetch draws a new crop position and a speed factor (uniformly among
    ``speed_perturb``). Outputs: ``id``, ``sig`` (``[crop]`` float32, at
    ``sample_rate``), ``spk_label`` (LongTensor ``[1]``, speed-expanded, see the
    module docstring) and ``spk_id`` (the speaker name of the loaded file).

    Arguments
    ---------
    csv_file : str or os.PathLike
        CSV with ``ID,duration,wav,spk_id`` (any preparation of this package).
    crop_seconds : float or sequence of two floats
        Crop length; shorter files are repeated up to it. For a range ``[shortest,
        longest]`` the items have the longest length (the training step cuts each
        batch with :func:`random_batch_crop`).
    speed_perturb : sequence of float or None
        Speed factors; None or (1.0,) for none.
    sample_rate : int
        Rate of the returned waveforms.
    label_encoder_file : str or os.PathLike, optional
        Where the speaker -> index encoder is saved, or loaded from when it exists
        (so a resumed run keeps its labels).
    augment : callable, optional
        Applied to each crop as ``augment(wav[None], torch.ones(1))[0]`` (e.g.
        :class:`~speechbrain_w2vbert_sv.data.augmentation.RandomAugment`), so it
        runs in the DataLoader workers.
    retries : int
        Replacement attempts when files fail to load, before giving up.

    Returns
    -------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        Base speakers (``len`` = number of speakers).
    num_classes : int
        Number of classifier outputs: speakers x speed factors.

    Example
    -------
    >>> import numpy, soundfile
    >>> from speechbrain_w2vbert_sv.data.csv_io import write_csv
    >>> folder = getfixture("tmp_path")
    >>> soundfile.write(folder / "a.wav", numpy.random.randn(8000) * 0.1, 16000)
    >>> row = {"ID": "a", "duration": 0.5, "wav": folder / "a.wav", "spk_id": "s1"}
    >>> write_csv(folder / "train.csv", [row])
    >>> data, encoder, num_classes = make_train_dataset(folder / "train.csv", crop_seconds=0.2)
    >>> item = data[0]
    >>> item["sig"].shape, num_classes, item["spk_label"].item() in (0, 1, 2)
    (torch.Size([3200]), 3, True)
    """
    rows = {row["ID"]: row for row in read_csv(csv_file)}
    if not rows:
        raise ValueError(f"{csv_file}: no utterances")
    missing = {"duration", "wav", "spk_id"} - set(next(iter(rows.values())))
    if missing:
        raise ValueError(f"{csv_file}: missing column(s) {sorted(missing)}")
    longest_crop = crop_range(crop_seconds)[1]
    factors = speed_factor_order(speed_perturb)
    # Only the duration is static (for sorting): the other outputs come from the file
    # actually loaded, which may be a replacement.
    dataset = DynamicItemDataset(
        {utt_id: {"duration": float(row["duration"])} for utt_id, row in rows.items()}
    )
    encoder = speaker_label_encoder(
        (row["spk_id"] for row in rows.values()), label_encoder_file, csv_file
    )
    loader = _TrainItemLoader(rows, longest_crop, factors, sample_rate, encoder, augment, retries)
    dataset.add_dynamic_item(loader, takes="id", provides=["sig", "spk_label", "spk_id"])
    dataset.set_output_keys(["id", "sig", "spk_label", "spk_id"])
    return dataset, encoder, len(encoder) * len(factors)


def make_eval_dataset(source, data_folder=None, sample_rate=16000):
    """Whole-utterance dataset for embedding extraction (verification, scoring).

    Outputs: ``id``, ``sig`` (whole waveform at ``sample_rate``) and ``duration``
    (seconds). A file that cannot be loaded raises
    :class:`~speechbrain_w2vbert_sv.data.audio.AudioFileError` naming it.

    Arguments
    ---------
    source : str, os.PathLike or list of str
        A CSV (``ID,duration,wav``, e.g. a prepared ``test.csv``), or files: a list
        of paths, a text file of paths (one a line) or a trial list's
        :attr:`~speechbrain_w2vbert_sv.scoring.trials.Trials.files`. Files get
        the ID :func:`~speechbrain_w2vbert_sv.data.csv_io.path_to_id` of their
        path relative to ``data_folder``, as written in trial lists.
    data_folder : str or os.PathLike, optional
        Root of relative file paths.
    sample_rate : int
        Rate of the returned waveforms.

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset

    Example
    -------
    >>> import numpy, soundfile
    >>> folder = getfixture("tmp_path")
    >>> (folder / "spk1").mkdir()
    >>> soundfile.write(folder / "spk1/u1.flac", numpy.zeros(4000), 8000)
    >>> make_eval_dataset(["spk1/u1.wav"], data_folder=folder)
    Traceback (most recent call last):
    ...
    speechbrain_w2vbert_sv.data.audio.AudioFileError: .../spk1/u1.wav: missing file
    >>> data = make_eval_dataset(["spk1/u1.flac"], data_folder=folder)
    >>> data[0]["id"], data[0]["sig"].shape, data[0]["duration"]
    ('spk1--u1', torch.Size([8000]), 0.5)
    """
    root = pathlib.Path(data_folder) if data_folder is not None else pathlib.Path()
    is_csv = not isinstance(source, (list, tuple)) and os.fspath(source).endswith(".csv")
    if is_csv:
        data = {}
        for row in read_csv(source):
            data[row["ID"]] = {"wav": row["wav"], "duration": float(row["duration"])}
    else:
        data = {}
        for rel in read_file_list(source):
            path = root / rel
            info = audio_info(path)
            data[path_to_id(rel)] = {"wav": str(path), "duration": info.duration}
    if not data:
        raise ValueError(f"{source}: no utterances")
    dataset = DynamicItemDataset(data)
    dataset.add_dynamic_item(
        functools.partial(load_audio, sample_rate=sample_rate), takes="wav", provides="sig"
    )
    dataset.set_output_keys(["id", "sig", "duration"])
    return dataset
