"""Diarization: who spoke when, with any speaker model of this package.

Speech regions (Silero VAD, or given) are cut into 1.5 s windows every 0.75 s
(:mod:`~speechbrain_w2vbert_sv.applications.windows`), each window is embedded, the
embeddings are clustered (:mod:`~speechbrain_w2vbert_sv.applications.clustering`) and
the labelled windows become speaker segments. Two ways to embed the windows:

- ``"windows"``: each window through the model's whole forward, in length-sorted
  batches. Works with every model form (ONNX too).
- ``"shared"``: the front end and encoder run once over each speech region (regions
  longer than ``chunk_seconds`` in chunks of whole windows), and each window's embedding
  is the head pooled over that window's slice of the shared frame outputs. The MFA head
  pools over frames, so a window costs only its head; each frame also sees the context
  of its whole region. It needs a torch model with ``frontend``, ``backbone`` and
  ``head`` (w2v-BERT or Conformer MFA, pruned, int8); an ONNX graph only gives
  embeddings, so it falls back to ``"windows"`` with a note.

The default is ``"shared"``: it does about one encoder pass where window mode does two
(windows overlap by half), and its diarization error was no worse on simulated
conversations (see the README's diarization section and ``benchmarks/diarization.py``).

Overlapped speech is not handled: every instant of speech gets one speaker.

Example
-------
>>> from hyperpyyaml import load_hyperpyyaml
>>> from speechbrain_w2vbert_sv.inference.interface import W2VBertSpeakerRecognition
>>> from speechbrain_w2vbert_sv.inference.model_yaml import inference_hparams_text
>>> small = {"w2vbert_source": None, "w2vbert_config": {"hidden_size": 32,
...     "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
...     "num_hidden_states": 3, "hidden_size": 32, "adapter_size": 8,
...     "attention_channels": 4, "embedding_size": 16}
>>> hparams = load_hyperpyyaml(inference_hparams_text(small, threshold=0.5))
>>> model = W2VBertSpeakerRecognition(modules=hparams["modules"], hparams=hparams,
...                                   run_opts={"device": "cpu"})
>>> diarizer = Diarizer(model, vad=None)
>>> windows, embeddings = diarizer.window_embeddings(torch.randn(48000), [(0.0, 3.0)])
>>> windows.tolist(), embeddings.shape
([[0.0, 1.5], [0.75, 2.25], [1.5, 3.0]], (3, 16))
>>> segments = diarizer.diarize_waveform(torch.randn(48000), speech=[(0.5, 2.5)])
>>> segments[0][0], segments[-1][1]
(0.5, 2.5)
"""

import os
import pathlib

import numpy as np
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.applications.clustering import cluster
from speechbrain_w2vbert_sv.applications.rttm import read_segments, write_rttm
from speechbrain_w2vbert_sv.applications.vad import SileroVAD
from speechbrain_w2vbert_sv.applications.windows import (
    labels_to_segments,
    merge_regions,
    window_times,
)
from speechbrain_w2vbert_sv.data.audio import AudioFileError
from speechbrain_w2vbert_sv.inference.extraction import autocast_context, make_batches

__all__ = ["Diarizer", "cluster", "diarize_files", "labels_to_segments", "shared_parts"]

logger = get_logger(__name__)

MODES = ("shared", "windows")


def shared_parts(embedding_model):
    """The ``(frontend, backbone, head)`` of a model that shared mode can split, else None.

    Arguments
    ---------
    embedding_model : torch.nn.Module
        A pretrained interface's ``mods.embedding_model``.

    Returns
    -------
    tuple of torch.nn.Module or None
        None for a model without the three parts (an ONNX graph, SpeechBrain's chain).

    Example
    -------
    >>> shared_parts(torch.nn.Linear(2, 2)) is None
    True
    """
    parts = tuple(getattr(embedding_model, name, None) for name in ("frontend", "backbone", "head"))
    if all(isinstance(part, torch.nn.Module) for part in parts):
        return parts
    return None


def _pad(pieces):
    """Pieces ``[T_i, ...]`` zero-padded along their first axis into ``[B, T, ...]``,
    with their relative lengths ``[B]``."""
    lengths = torch.tensor([p.shape[0] for p in pieces], dtype=torch.float64)
    batch = pieces[0].new_zeros((len(pieces), int(lengths.max()), *pieces[0].shape[1:]))
    for row, piece in enumerate(pieces):
        batch[row, : piece.shape[0]] = piece
    return batch, (lengths / lengths.max()).float()


class Diarizer:
    """Who spoke when in a recording, with a loaded speaker model.

    Arguments
    ---------
    model : speechbrain_w2vbert_sv.inference.interface.W2VBertSpeakerRecognition
        What ``load_model`` returns: an exported folder, int8, ONNX (``from_onnx``), an
        imported checkpoint or a training run.
    vad : str, callable or None
        ``"silero"`` (:class:`~speechbrain_w2vbert_sv.applications.vad.SileroVAD` with
        its defaults), a ``SileroVAD`` with other options, any callable
        ``(wav, sample_rate) -> [(start, end)]``, or None (the whole recording is speech
        unless regions are given).
    window, step : float
        Window length and hop in seconds.
    mode : str
        ``"shared"`` (one encoder pass per region) or ``"windows"`` (see the module).
    clustering : str
        ``"spectral"`` (speaker count from the eigengap) or ``"agglomerative"``.
    num_speakers : int, optional
        Known number of speakers.
    min_speakers, max_speakers : int
        Bounds on the estimated number of speakers (``max_speakers`` None: 10 for
        spectral clustering, no bound for agglomerative).
    threshold : float, optional
        Cosine-similarity threshold: where agglomerative clustering stops merging, and
        above which spectral clustering's centroids (or the two windows of a recording
        with fewer than three) are one speaker; default: the model's verification
        threshold.
    batch_seconds : float
        Largest padded audio duration of a batch of windows or regions.
    max_batch_size : int
        Largest number of windows or regions in a batch.
    chunk_seconds : float
        Shared mode: longest stretch of a region the encoder sees at once.
    min_duration : float
        Speech regions shorter than this (seconds) are not embedded.

    Example
    -------
    >>> Diarizer(model=None, mode="fast")  # options are checked first (see the module)
    Traceback (most recent call last):
    ...
    ValueError: mode must be one of ('shared', 'windows'), got 'fast'
    """

    def __init__(
        self,
        model,
        vad="silero",
        window=1.5,
        step=0.75,
        mode="shared",
        clustering="spectral",
        num_speakers=None,
        min_speakers=1,
        max_speakers=None,
        threshold=None,
        batch_seconds=100.0,
        max_batch_size=64,
        chunk_seconds=30.0,
        min_duration=0.1,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0 < step <= window:
            raise ValueError(f"need 0 < step <= window, got step {step} and window {window}")
        if chunk_seconds < window:
            raise ValueError(f"chunk_seconds ({chunk_seconds}) must be at least window ({window})")
        self.model = model
        self.vad = SileroVAD() if vad == "silero" else vad
        if not (self.vad is None or callable(self.vad)):
            raise ValueError(f"vad must be 'silero', a callable or None, got {vad!r}")
        self.window = window
        self.step = step
        self.parts = shared_parts(model.mods.embedding_model) if mode == "shared" else None
        if mode == "shared" and self.parts is None:
            logger.warning(
                "shared mode needs a torch model with frontend, backbone and head (%s has "
                "none): embedding each window instead",
                type(model.mods.embedding_model).__name__,
            )
        self.mode = "shared" if self.parts is not None else "windows"
        self.cluster_options = {
            "method": clustering,
            "num_speakers": num_speakers,
            "min_speakers": min_speakers,
            "max_speakers": max_speakers,
            "threshold": model.hparams.threshold if threshold is None else threshold,
        }
        cluster(np.zeros((0, 1)), **self.cluster_options)  # checks the options now
        self.batch_seconds = batch_seconds
        self.max_batch_size = max_batch_size
        self.chunk_seconds = chunk_seconds
        self.min_duration = min_duration

    @property
    def sample_rate(self):
        """The model's sample rate."""
        return int(self.model.hparams.sample_rate)

    def diarize_file(self, path, speech=None):
        """Speaker segments of an audio file.

        Arguments
        ---------
        path : str or os.PathLike
            Audio file (any rate or channel count).
        speech : list of (float, float), optional
            Speech regions in seconds (e.g. a reference's); default: the VAD's.

        Returns
        -------
        list of (float, float, str)
            ``(start, end, speaker)``; empty (with a warning) when there is no speech.

        Raises
        ------
        speechbrain_w2vbert_sv.data.audio.AudioFileError
            An unreadable file, naming it.
        """
        return self._diarize(self.model.load_audio(path), speech, name=str(path))

    def diarize_waveform(self, wav, speech=None):
        """Speaker segments of a waveform.

        Arguments
        ---------
        wav : torch.Tensor
            Mono waveform ``[samples]`` at the model's sample rate.
        speech : list of (float, float), optional
            Speech regions in seconds; default: the VAD's.

        Returns
        -------
        list of (float, float, str)
            ``(start, end, speaker)`` in time order.
        """
        return self._diarize(wav, speech, name="waveform")

    def speech_regions(self, wav, speech=None):
        """The speech regions to embed: given or detected, joined and cut to the audio.

        Arguments
        ---------
        wav : torch.Tensor
            Mono waveform ``[samples]``.
        speech : list of (float, float), optional
            Given regions in seconds.

        Returns
        -------
        list of (float, float)
        """
        duration = wav.shape[-1] / self.sample_rate
        if speech is None:
            speech = [(0.0, duration)] if self.vad is None else self.vad(wav, self.sample_rate)
        return merge_regions(speech, duration, self.min_duration)

    def _diarize(self, wav, speech, name):
        wav = torch.as_tensor(wav).reshape(-1)
        regions = self.speech_regions(wav, speech)
        if not regions:
            logger.warning("%s: no speech found; no speaker segments", name)
            return []
        windows, embeddings = self.window_embeddings(wav, regions)
        labels = cluster(embeddings, **self.cluster_options)
        return labels_to_segments(windows, labels)

    def window_embeddings(self, wav, speech):
        """The windows of speech regions and their speaker embeddings.

        Arguments
        ---------
        wav : torch.Tensor
            Mono waveform ``[samples]`` at the model's sample rate.
        speech : list of (float, float)
            Sorted, non-overlapping speech regions in seconds.

        Returns
        -------
        windows : numpy.ndarray
            ``[N, 2]`` float ``(start, end)`` in seconds.
        embeddings : numpy.ndarray
            ``[N, E]`` float32.
        """
        wav = torch.as_tensor(wav).reshape(-1)
        windows = window_times(speech, self.window, self.step)
        if len(windows) == 0:
            return windows, np.zeros((0, 0), dtype=np.float32)
        with torch.no_grad():
            if self.mode == "shared":
                embeddings = self._shared_embeddings(wav, speech, windows)
            else:
                embeddings = self._window_embeddings(wav, windows)
        return windows, embeddings.float().cpu().numpy()

    def _samples(self, seconds):
        return int(round(seconds * self.sample_rate))

    def _batches(self, spans):
        """Length-sorted batches of ``(start, end)`` sample spans."""
        lengths = [end - start for start, end in spans]
        return make_batches(
            lengths, self.batch_seconds, self.max_batch_size, self.sample_rate, max_padding=0.2
        )

    def _window_embeddings(self, wav, windows):
        spans = [(self._samples(s), self._samples(e)) for s, e in windows]
        table = None
        for batch in self._batches(spans):
            wavs, lens = _pad([wav[spans[i][0] : spans[i][1]] for i in batch])
            embeddings = self.model.encode_batch(wavs, lens).reshape(len(batch), -1)
            if table is None:
                table = embeddings.new_empty(len(spans), embeddings.shape[1])
            table[batch] = embeddings
        return table

    def _chunks(self, speech, windows):
        """Per chunk: ``(start, end)`` in seconds and the indices of its windows.

        A region is one chunk unless longer than ``chunk_seconds``; then consecutive
        windows are grouped while their span fits, so every window lies inside a chunk.
        """
        chunks = []
        index = 0
        for _, region_end in speech:
            current = []
            while index < len(windows) and windows[index, 1] <= region_end + 1e-9:
                if current and windows[index, 1] - windows[current[0], 0] > self.chunk_seconds:
                    chunks.append(current)
                    current = []
                current.append(index)
                index += 1
            if current:
                chunks.append(current)
        return [((windows[c[0], 0], windows[c[-1], 1]), c) for c in chunks]

    def _shared_embeddings(self, wav, speech, windows):
        frontend, backbone, head = self.parts
        chunks = self._chunks(speech, windows)
        spans = [(self._samples(s), self._samples(e)) for (s, e), _ in chunks]
        table = None
        for batch in self._batches(spans):
            wavs, lens = _pad([wav[spans[i][0] : spans[i][1]] for i in batch])
            wavs, lens = wavs.to(self.model.device), lens.to(self.model.device)
            with autocast_context(self.model.device, self.model.precision):
                feats, feat_lens = frontend(wavs, lens)
                hidden, hidden_lens = backbone(feats, feat_lens)
            frames = torch.round(hidden_lens.double() * hidden.shape[2]).long().tolist()
            slices, owners = [], []
            for row, chunk in enumerate(batch):
                (chunk_start, _), members = chunks[chunk]
                num_samples = spans[chunk][1] - spans[chunk][0]
                for i in members:
                    first, last = self.frame_span(
                        windows[i] - chunk_start, num_samples, frames[row]
                    )
                    slices.append(hidden[:, row, first:last].transpose(0, 1))  # [T, L, D]
                    owners.append(i)
            # The head in batches of windows: its input is L x the encoder width per frame.
            for k in range(0, len(slices), self.max_batch_size):
                frames_batch, frame_lens = _pad(slices[k : k + self.max_batch_size])
                with autocast_context(self.model.device, self.model.precision):
                    out = head(frames_batch.permute(2, 0, 1, 3), frame_lens.to(hidden.device))
                out = out.reshape(out.shape[0], -1).float()
                if table is None:
                    table = out.new_empty(len(windows), out.shape[1])
                table[owners[k : k + self.max_batch_size]] = out
        return table

    def frame_span(self, window, num_samples, num_frames):
        """The frames ``[first, last)`` of a window inside a chunk's frame outputs.

        Frames are spread evenly over the chunk's samples (20 ms each for w2v-BERT, 40 ms
        for the Conformers), so time ``t`` is frame ``t / duration x frames``, rounded;
        every window gets at least one frame.

        Arguments
        ---------
        window : sequence of float
            ``(start, end)`` in seconds from the chunk's start.
        num_samples : int
            Samples of the chunk.
        num_frames : int
            Valid frame outputs of the chunk.

        Returns
        -------
        tuple of int
        """
        rate = num_frames / (num_samples / self.sample_rate)
        first = min(int(np.floor(window[0] * rate + 0.5)), num_frames - 1)
        last = min(int(np.floor(window[1] * rate + 0.5)), num_frames)
        return first, max(last, first + 1)


def _recordings(paths):
    """The recording name (file stem) of each path; two files of one stem are an error."""
    stems = {}
    for path in paths:
        stem = pathlib.Path(path).stem
        if not stem or any(c.isspace() for c in stem):
            raise ValueError(f"{path}: its file stem {stem!r} cannot name an RTTM recording")
        if stem in stems:
            raise ValueError(
                f"{stems[stem]} and {path} share the stem {stem!r}: their RTTMs would "
                "overwrite each other (diarize them into different output folders)"
            )
        stems[stem] = path
    return list(stems)


def diarize_files(diarizer, paths, output_folder, segments=None, overwrite=False):
    """Diarizes audio files into ``<output_folder>/<file stem>.rttm``, one per file.

    An RTTM is written atomically once its file is done, so a stopped run resumes where
    it stopped: existing RTTMs are kept unless ``overwrite``. A file that cannot be read
    is skipped with a warning, and reported at the end.

    Arguments
    ---------
    diarizer : Diarizer
        The configured diarizer.
    paths : sequence of str or os.PathLike
        Audio files; the recording field of each RTTM is the file stem.
    output_folder : str or os.PathLike
        Folder of the RTTMs (created).
    segments : str or os.PathLike, optional
        RTTM or UEM file (or folder) of the speech regions of every recording, keyed
        by file stem (instead of the VAD).
    overwrite : bool
        Diarize again files whose RTTM exists.

    Returns
    -------
    dict
        Recording -> its segments (None for an RTTM kept from an earlier run).

    Raises
    ------
    ValueError
        Two files of one stem, a recording without regions in ``segments``, or (after
        the others are written) files that could not be read, naming them.
    """
    paths = [os.fspath(p) for p in paths]
    recordings = _recordings(paths)
    regions = None
    if segments is not None:
        regions = read_segments(segments)
        missing = [r for r in recordings if r not in regions]
        if missing:
            raise ValueError(
                f"{segments}: no speech regions for recording(s) {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''} (recordings are named by file stem)"
            )
    output_folder = pathlib.Path(output_folder)
    results, failures = {}, []
    for path, recording in zip(paths, recordings):
        rttm = output_folder / f"{recording}.rttm"
        if rttm.is_file() and not overwrite:
            results[recording] = None
            continue
        try:
            found = diarizer.diarize_file(path, None if regions is None else regions[recording])
        except AudioFileError as error:
            logger.warning("skipped %s", error)
            failures.append(str(error))
            continue
        write_rttm(rttm, recording, found)
        results[recording] = found
    if failures:
        raise ValueError(
            f"{len(failures)} of {len(paths)} file(s) could not be read and were skipped "
            f"({failures[0]}{'; ...' if len(failures) > 1 else ''}); the other RTTMs are "
            f"in {output_folder}"
        )
    return results
