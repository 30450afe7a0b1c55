"""Batched whole-utterance embedding extraction for lists of audio files.

Each distinct file is embedded once, however often it is listed (a trial list names
each utterance in many trials). Files are sorted by duration and grouped into batches
bounded by their padded duration, so utterances of similar length share a batch and
padding stays minimal; the model sees relative lengths and masks the padding.

Example
-------
>>> import numpy, soundfile
>>> folder = getfixture("tmp_path")
>>> for i, seconds in enumerate([0.5, 0.2, 0.3]):
...     soundfile.write(folder / f"{i}.wav", 0.1 * numpy.ones(int(16000 * seconds)), 16000)
>>> def toy_model(wavs, wav_lens):  # mean and relative length, [B, 1, 2]
...     return torch.stack([wavs.sum(1) / wavs.shape[1] / wav_lens, wav_lens], 1)[:, None]
>>> paths = [folder / "0.wav", folder / "1.wav", folder / "0.wav"]
>>> embed_files(toy_model, paths, progress=False)[:, 0]
tensor([0.1000, 0.1000, 0.1000])
"""

import os

import torch
from tqdm.auto import tqdm

from speechbrain_w2vbert_sv.data.audio import audio_info, load_audio

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_batches(
    num_samples, batch_seconds=200.0, max_batch_size=64, sample_rate=16000, max_padding=0.2
):
    """Groups utterances by length into batches of bounded padded duration.

    Utterances are sorted from longest to shortest and taken greedily: a batch
    grows while ``batch size x its longest utterance`` stays within
    ``batch_seconds`` (an utterance longer than that is a batch of its own) and
    while the next utterance is padded by at most ``max_padding`` of the longest
    (in a large list neighbours are almost equally long; in a small one this keeps
    a batch from padding short files to a far longer one).

    Arguments
    ---------
    num_samples : sequence of int
        Length of each utterance in samples.
    batch_seconds : float
        Largest padded duration of a batch (batch size x longest utterance), in
        seconds: it bounds the memory of a batch.
    max_batch_size : int
        Largest number of utterances in a batch.
    sample_rate : int
        Rate that converts ``batch_seconds`` to samples.
    max_padding : float
        Largest fraction of the longest utterance that may be padding for any
        utterance of the batch (1.0: no limit).

    Returns
    -------
    list of list of int
        Indices into ``num_samples``, longest batch first.

    Example
    -------
    >>> make_batches([16000, 48000, 8000, 40000], batch_seconds=6.0)
    [[1, 3], [0], [2]]
    >>> make_batches([16000, 48000, 8000, 40000], batch_seconds=6.0, max_padding=1.0)
    [[1, 3], [0, 2]]
    """
    if batch_seconds <= 0 or max_batch_size < 1 or not 0.0 <= max_padding <= 1.0:
        raise ValueError(
            "need batch_seconds > 0, max_batch_size >= 1 and max_padding in [0, 1], got "
            f"{batch_seconds}, {max_batch_size} and {max_padding}"
        )
    budget = batch_seconds * sample_rate
    order = sorted(range(len(num_samples)), key=lambda i: -num_samples[i])
    batches, current = [], []
    for index in order:
        # The first item of a batch is its longest (descending order).
        longest = num_samples[current[0]] if current else num_samples[index]
        if current and (
            len(current) >= max_batch_size
            or (len(current) + 1) * longest > budget
            or num_samples[index] < (1.0 - max_padding) * longest
        ):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class _BatchLoader(torch.utils.data.Dataset):
    """Loads and pads one batch of files per item (run in DataLoader workers)."""

    def __init__(self, paths, batches, sample_rate):
        self.paths = paths
        self.batches = batches
        self.sample_rate = sample_rate

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, item):
        indices = self.batches[item]
        wavs = [load_audio(self.paths[i], self.sample_rate) for i in indices]
        lengths = torch.tensor([w.shape[0] for w in wavs], dtype=torch.float64)
        padded = torch.zeros(len(wavs), int(lengths.max()))
        for row, wav in enumerate(wavs):
            padded[row, : wav.shape[0]] = wav
        return torch.as_tensor(indices), padded, (lengths / lengths.max()).float()


def autocast_context(device, precision):
    """The ``torch.autocast`` context of a precision name on a device.

    Not SpeechBrain's ``TorchAutocast`` (``Pretrained.inference_ctx``): its fp32 leaves an
    enclosing autocast on, this fp32 turns it off, so fp32 embeddings are fp32 anywhere.

    Arguments
    ---------
    device : torch.device or str
        Where the model runs.
    precision : str
        ``fp32`` (no autocast), ``bf16`` or ``fp16``.

    Returns
    -------
    torch.autocast
        Disabled for ``fp32``.

    Example
    -------
    >>> autocast_context("cpu", "fp32").fast_dtype == torch.get_autocast_dtype("cpu")
    True
    >>> autocast_context("cpu", "fp64")
    Traceback (most recent call last):
    ...
    ValueError: precision must be one of ['fp32', 'bf16', 'fp16'], got 'fp64'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{device} does not support bf16; use precision fp16 or fp32")
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def _model_device(model):
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
    return torch.device("cpu")


def embed_files(
    model,
    paths,
    sample_rate=16000,
    batch_seconds=200.0,
    max_batch_size=64,
    max_padding=0.2,
    precision="fp32",
    device=None,
    durations=None,
    num_workers=0,
    progress=True,
):
    """Embeds every file of a list, each distinct file once, in length-sorted batches.

    Arguments
    ---------
    model : callable
        ``(wavs [B, S], wav_lens [B]) -> embeddings [B, 1, E] or [B, E]``, e.g. a
        ``SpeakerEmbeddingModel``. A module is run in eval mode (its mode is restored
        afterwards) without gradients.
    paths : sequence of str or os.PathLike
        Audio files (any rate or channel count: they are resampled and downmixed).
    sample_rate : int
        Rate the model expects.
    batch_seconds : float
        Largest padded audio duration of a batch, in seconds (see ``make_batches``).
    max_batch_size : int
        Largest number of files in a batch.
    max_padding : float
        Largest padded fraction of a batch's longest file (see ``make_batches``).
    precision : str
        ``fp32``, ``bf16`` or ``fp16`` (autocast); embeddings are returned in float32.
    device : torch.device or str, optional
        Where the batches go; default: the device of the model's parameters.
    durations : dict, optional
        Path -> duration in seconds of the files, when already known (e.g. from a
        check of the files); otherwise the file headers are read.
    num_workers : int
        DataLoader processes that read and pad the batches ahead of the model.
    progress : bool
        Show a progress bar.

    Returns
    -------
    torch.Tensor
        [len(paths), E] float32 embeddings on the CPU, in the order of ``paths``.

    Raises
    ------
    speechbrain_w2vbert_sv.data.audio.AudioFileError
        A file that cannot be read (naming it).
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no files to embed")
    unique = list(dict.fromkeys(paths))
    if durations is None:
        durations = {p: audio_info(p).duration for p in unique}
    num_samples = [int(round(durations[p] * sample_rate)) for p in unique]
    batches = make_batches(num_samples, batch_seconds, max_batch_size, sample_rate, max_padding)
    table = None
    for indices, embeddings in embed_batches(
        model, unique, batches, sample_rate, precision, device, num_workers, progress
    ):
        if table is None:
            table = torch.empty(len(unique), embeddings.shape[1])
        table[indices] = embeddings
    row = {p: i for i, p in enumerate(unique)}
    return table[torch.as_tensor([row[p] for p in paths])]


def embed_batches(
    model,
    paths,
    batches,
    sample_rate=16000,
    precision="fp32",
    device=None,
    num_workers=0,
    progress=True,
):
    """Embeds given batches of files, yielding each batch's embeddings as it is done.

    The loop of ``embed_files``, for callers that group the batches themselves (e.g.
    the resumable parts of ``distributed_extraction``): one DataLoader reads ahead
    across all the batches.

    Arguments
    ---------
    model : callable
        ``(wavs [B, S], wav_lens [B]) -> embeddings [B, 1, E] or [B, E]`` (a module is
        run in eval mode, restored afterwards, without gradients).
    paths : sequence of str
        Audio files.
    batches : sequence of list of int
        Indices into ``paths``, one list per batch (e.g. from ``make_batches``).
    sample_rate, precision, device, num_workers, progress :
        As in ``embed_files``; ``progress`` counts files.

    Yields
    ------
    indices : torch.Tensor
        [B] indices into ``paths`` of the batch.
    embeddings : torch.Tensor
        [B, E] float32 on the CPU.

    Example
    -------
    >>> import numpy, soundfile
    >>> model = lambda wavs, wav_lens: wavs[:, :2]
    >>> path = getfixture("tmp_path") / "a.wav"
    >>> soundfile.write(path, 0.5 * numpy.ones(800), 16000)
    >>> [(i.tolist(), e.tolist()) for i, e in embed_batches(model, [path], [[0]], progress=False)]
    [([0], [[0.5, 0.5]])]
    """
    loader = torch.utils.data.DataLoader(
        _BatchLoader(paths, batches, sample_rate),
        batch_size=None,
        num_workers=num_workers,
    )
    device = torch.device(device) if device is not None else _model_device(model)
    is_module = isinstance(model, torch.nn.Module)
    was_training = is_module and model.training
    if is_module:
        model.eval()
    total = sum(len(b) for b in batches)
    try:
        with (
            torch.no_grad(),
            tqdm(total=total, unit="file", desc="embedding", disable=not progress) as bar,
        ):
            for indices, wavs, wav_lens in loader:
                with autocast_context(device, precision):
                    embeddings = model(wavs.to(device), wav_lens.to(device))
                bar.update(len(indices))
                yield indices, embeddings.reshape(len(indices), -1).float().cpu()
    finally:
        if is_module:
            model.train(was_training)
