"""Speech detection with Silero VAD: where in a recording someone speaks.

The ``silero-vad`` package ships its model in the wheel, so detection runs offline. Its
``get_speech_timestamps`` does the work; this module holds the options in seconds,
resamples the waveform to a rate the model takes (8 or 16 kHz), and returns the speech
regions in seconds.

Example
-------
>>> vad = SileroVAD(threshold=0.5)
>>> vad(torch.zeros(16000), sample_rate=16000)  # one second of silence
[]
"""

import warnings

import torch
import torchaudio

# Rates the Silero model runs at; others are resampled to 16 kHz.
SILERO_RATES = (8000, 16000)


def _load_silero():
    from silero_vad import load_silero_vad

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*")
        return load_silero_vad()


class SileroVAD:
    """Silero voice activity detection returning speech regions in seconds.

    Arguments
    ---------
    threshold : float
        Speech probability above which a 32 ms frame is speech (Silero's default 0.5).
    neg_threshold : float, optional
        Probability below which speech ends (default: Silero's ``threshold - 0.15``).
    min_speech : float
        Shortest speech region kept, in seconds.
    min_silence : float
        Shortest pause that ends a speech region, in seconds.
    speech_pad : float
        Padding added on each side of a region, in seconds.

    Example
    -------
    >>> SileroVAD(min_speech=0.5).min_speech
    0.5
    """

    def __init__(
        self, threshold=0.5, neg_threshold=None, min_speech=0.25, min_silence=0.1, speech_pad=0.03
    ):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"VAD threshold must be in (0, 1), got {threshold}")
        if min(min_speech, min_silence, speech_pad) < 0:
            raise ValueError(
                "min_speech, min_silence and speech_pad are durations in seconds (>= 0), got "
                f"{min_speech}, {min_silence} and {speech_pad}"
            )
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self.min_speech = min_speech
        self.min_silence = min_silence
        self.speech_pad = speech_pad
        self._model = None

    def __call__(self, wav, sample_rate=16000):
        """Speech regions of a waveform.

        Arguments
        ---------
        wav : torch.Tensor
            Mono waveform ``[samples]`` (any device).
        sample_rate : int
            Its rate; other rates than 8 or 16 kHz are resampled to 16 kHz.

        Returns
        -------
        list of (float, float)
            ``(start, end)`` of each speech region in seconds, in time order.
        """
        from silero_vad import get_speech_timestamps

        if self._model is None:
            self._model = _load_silero()
        wav = torch.as_tensor(wav).detach().float().cpu().reshape(-1)
        if sample_rate not in SILERO_RATES:
            wav = torchaudio.functional.resample(wav, sample_rate, 16000)
            sample_rate = 16000
        with torch.no_grad():
            stamps = get_speech_timestamps(
                wav,
                self._model,
                threshold=self.threshold,
                neg_threshold=self.neg_threshold,
                sampling_rate=sample_rate,
                min_speech_duration_ms=int(round(1000 * self.min_speech)),
                min_silence_duration_ms=int(round(1000 * self.min_silence)),
                speech_pad_ms=int(round(1000 * self.speech_pad)),
            )
        return [(s["start"] / sample_rate, s["end"] / sample_rate) for s in stamps]
