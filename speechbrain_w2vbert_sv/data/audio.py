"""Audio reading: the one place the project opens audio files.

Files are read with ``soundfile`` (``torchaudio.load`` needs torchcodec, which this
project does not require), downmixed to mono and resampled to the requested rate.
Every problem with a file is raised as :class:`AudioFileError`, a ``ValueError``
whose message names the file and the problem.

Example
-------
>>> import soundfile, torch
>>> path = getfixture("tmp_path") / "tone.wav"
>>> soundfile.write(path, 0.1 * torch.ones(800).numpy(), 8000)
>>> audio_info(path).duration
0.1
>>> load_audio(path, sample_rate=16000).shape
torch.Size([1600])
"""

import dataclasses
import os

import numpy as np
import soundfile
import torch
import torchaudio

# Containers libsndfile cannot decode; the error then says how to convert them.
COMPRESSED_SUFFIXES = (".m4a", ".aac", ".mp4", ".opus", ".wma")


class AudioFileError(ValueError):
    """An audio file that cannot be used, with the file and the reason.

    Arguments
    ---------
    path : str or os.PathLike
        The file.
    problem : str
        What is wrong with it (short, lower case; reused in corpus reports).

    Example
    -------
    >>> err = AudioFileError("a.wav", "empty file (0 bytes)")
    >>> str(err)
    'a.wav: empty file (0 bytes)'
    >>> err.problem
    'empty file (0 bytes)'
    """

    def __init__(self, path, problem):
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path = os.fspath(path)
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """Header information of an audio file (see :func:`audio_info`)."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self):
        """Duration in seconds."""
        return self.frames / self.sample_rate


def _unreadable_problem(path, error):
    """Explains a libsndfile failure, with a conversion hint for compressed audio."""
    problem = f"unreadable audio ({str(error).strip() or type(error).__name__})"
    if str(path).lower().endswith(COMPRESSED_SUFFIXES):
        problem += (
            "; soundfile cannot decode this format: convert it to wav first, e.g. "
            "`ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav`, or "
            "speechbrain_w2vbert_sv.data.convert_to_wav for a whole folder"
        )
    return problem


def audio_info(path):
    """Reads the header of an audio file (cheap: no samples are decoded).

    Arguments
    ---------
    path : str or os.PathLike
        Audio file in a format libsndfile reads (wav, flac, ogg, ...).

    Returns
    -------
    AudioInfo
        ``sample_rate``, ``channels``, ``frames`` and ``duration`` (seconds).

    Raises
    ------
    AudioFileError
        If the file is missing, empty, its header cannot be read, or (WAV) its data
        is shorter than its header declares (a truncated copy).

    Example
    -------
    >>> import soundfile, numpy
    >>> path = getfixture("tmp_path") / "stereo.flac"
    >>> soundfile.write(path, numpy.zeros((4000, 2)), 16000)
    >>> audio_info(path)
    AudioInfo(sample_rate=16000, channels=2, frames=4000)
    >>> audio_info(path).duration
    0.25
    """
    if not os.path.isfile(path):
        raise AudioFileError(path, "missing file")
    if os.path.getsize(path) == 0:
        raise AudioFileError(path, "empty file (0 bytes)")
    try:
        info = soundfile.info(os.fspath(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioFileError(path, _unreadable_problem(path, error)) from None
    if info.format in ("WAV", "WAVEX"):
        promised = _wav_promised_frames(path)
        if promised is not None and promised > info.frames:
            raise AudioFileError(
                path,
                f"truncated file: its header promises {promised} frames "
                f"({promised / info.samplerate:.2f} s) but it holds {info.frames}",
            )
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def _wav_promised_frames(path):
    """Frames the ``data`` chunk of a RIFF/WAVE header declares (libsndfile reports
    the frames actually present), or None when the header does not say (streamed
    files write 0 or 0xFFFFFFFF) or is not plain RIFF."""
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"fmt ":
                fmt = f.read(size + size % 2)
                block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else None
            elif chunk[:4] == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + size % 2, os.SEEK_CUR)


def load_audio(path, sample_rate=16000, offset=0.0, duration=None, min_samples=1):
    """Reads an audio file as a mono float32 waveform at ``sample_rate``.

    Several channels are averaged; other sample rates are resampled with
    ``torchaudio.functional.resample``. ``offset``/``duration`` read only a segment
    (seeking, so random crops of long files stay cheap).

    Arguments
    ---------
    path : str or os.PathLike
        Audio file in a format libsndfile reads (wav, flac, ogg, ...).
    sample_rate : int
        Rate of the returned waveform.
    offset : float
        Start of the segment to read, in seconds.
    duration : float, optional
        Length of the segment in seconds (None: to the end of the file). A segment
        running past the end is cut at the end.
    min_samples : int
        Fewest samples (at ``sample_rate``) accepted; fewer raise AudioFileError.

    Returns
    -------
    torch.Tensor
        Waveform ``[S]``, float32.

    Raises
    ------
    AudioFileError
        Missing, empty, unreadable (e.g. truncated header), non-finite samples
        (NaN/Inf) or fewer than ``min_samples`` samples.

    Example
    -------
    >>> import soundfile, numpy
    >>> path = getfixture("tmp_path") / "stereo.wav"
    >>> soundfile.write(path, numpy.stack([numpy.ones(160), -numpy.ones(160)], 1) * 0.5, 16000)
    >>> load_audio(path).abs().max().item()  # the two channels cancel out
    0.0
    >>> load_audio(path, offset=0.005, duration=0.002).shape
    torch.Size([32])
    >>> load_audio(path, min_samples=400)
    Traceback (most recent call last):
    ...
    speechbrain_w2vbert_sv.data.audio.AudioFileError: ...stereo.wav: too short (160 samples ...
    """
    info = audio_info(path)
    start = int(round(offset * info.sample_rate))
    frames = -1 if duration is None else int(round(duration * info.sample_rate))
    try:
        data, _ = soundfile.read(
            os.fspath(path), start=start, frames=frames, dtype="float32", always_2d=True
        )
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
        raise AudioFileError(path, _unreadable_problem(path, error)) from None
    if data.size == 0 and start == 0:
        raise AudioFileError(path, "no audio samples (0 frames)")
    if not np.isfinite(data).all():
        raise AudioFileError(path, "non-finite samples (NaN or Inf)")
    wav = mono_waveform(data, info.sample_rate, sample_rate)
    if wav.numel() < min_samples:
        raise AudioFileError(
            path,
            f"too short ({wav.numel()} samples at {sample_rate} Hz, at least {min_samples} needed)",
        )
    return wav.contiguous()


def mono_waveform(data, file_rate, sample_rate=16000):
    """Decoded samples as a mono waveform at ``sample_rate`` (channels averaged).

    Arguments
    ---------
    data : numpy.ndarray
        ``[frames, channels]`` float32 samples, as ``soundfile.read(always_2d=True)``.
    file_rate : int
        Rate of ``data``.
    sample_rate : int
        Rate of the returned waveform.

    Returns
    -------
    torch.Tensor
        Waveform ``[S]``, float32.

    Example
    -------
    >>> mono_waveform(np.ones((8000, 2), dtype=np.float32), 8000).shape
    torch.Size([16000])
    """
    wav = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
    if file_rate != sample_rate and wav.numel() > 0:
        wav = torchaudio.functional.resample(wav, file_rate, sample_rate)
    return wav.contiguous()
