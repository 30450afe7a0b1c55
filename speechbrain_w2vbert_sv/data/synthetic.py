"""A built-in synthetic speaker corpus, so the quickstart runs with no data and no network.

Each speaker is a set of voice parameters of a source-filter model: mean pitch and
intonation depth, vocal-tract length (all formants scaled together) plus small
per-formant offsets, formant bandwidths, glottal open quotient (spectral tilt),
jitter, shimmer, breathiness, speaking rate, a preferred vowel distribution and the
colour of its fricative onsets. Pitch and tract length are drawn from one "body size"
variable (larger: lower pitch and lower formants), as in human voices, so speakers
overlap in every single parameter.

An utterance is a random sequence of syllables (an optional fricative noise onset,
then a vowel) with random pauses; the voiced source is a Rosenberg glottal pulse
train (declining, accented pitch contour with jitter/shimmer and pitch-synchronous
breath noise) through a cascade of four formant resonators. Each utterance varies its
pitch, rate and level, passes a random channel tilt and gets background noise at
20-40 dB SNR, so same-speaker utterances differ: speakers are separable by a simple
model, not trivially.

Example
-------
>>> voice = speaker_voice(0, seed=0)
>>> wav, words = synthesize_utterance(voice, 0.5, numpy.random.default_rng(0))
>>> wav.shape, wav.dtype
((8000,), dtype('float32'))
"""

import itertools
import pathlib

import numpy
import scipy.signal
import soundfile
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.audio import AudioInfo
from speechbrain_w2vbert_sv.data.csv_io import write_csv
from speechbrain_w2vbert_sv.data.preparation import (
    build_rows,
    preparation_done,
    save_preparation_options,
    split_dev,
)

logger = get_logger(__name__)

# F1-F4 (Hz) of an adult male voice (after Peterson & Barney), by vowel label.
VOWELS = {
    "i": (270, 2290, 3010, 3500),
    "e": (530, 1840, 2480, 3500),
    "ae": (660, 1720, 2410, 3400),
    "a": (730, 1090, 2440, 3400),
    "o": (570, 840, 2410, 3300),
    "u": (300, 870, 2240, 3300),
    "uh": (640, 1190, 2390, 3400),
    "er": (490, 1350, 1690, 3300),
}
_VOWEL_NAMES = list(VOWELS)
_FORMANTS = numpy.array([VOWELS[v] for v in _VOWEL_NAMES], dtype=float)
_BANDWIDTHS = numpy.array([60.0, 90.0, 150.0, 200.0])


def speaker_voice(speaker, seed=0):
    """Voice parameters of one synthetic speaker (deterministic in speaker and seed).

    Arguments
    ---------
    speaker : int
        Speaker number.
    seed : int
        Corpus seed.

    Returns
    -------
    dict
        The voice parameters (see the module docstring).

    Example
    -------
    >>> speaker_voice(3)["f0"] == speaker_voice(3)["f0"] != speaker_voice(4)["f0"]
    True
    """
    rng = numpy.random.default_rng([seed, 1, speaker])
    size = rng.standard_normal()
    f0 = 150.0 * numpy.exp(-0.35 * size + 0.12 * rng.standard_normal())
    return {
        "f0": float(numpy.clip(f0, 75.0, 320.0)),
        "formant_scale": float(numpy.exp(-0.1 * size + 0.05 * rng.standard_normal())),
        "formant_offsets": numpy.exp(0.04 * rng.standard_normal(4)),
        "bandwidth_scale": float(rng.uniform(0.8, 1.5)),
        "intonation": float(rng.uniform(0.04, 0.2)),
        "open_quotient": float(rng.uniform(0.4, 0.75)),
        "jitter": float(rng.uniform(0.003, 0.02)),
        "shimmer": float(rng.uniform(0.02, 0.12)),
        "breathiness": float(rng.uniform(0.02, 0.25)),
        "syllable_seconds": float(rng.uniform(0.13, 0.26)),
        "vowel_weights": rng.dirichlet(numpy.full(len(VOWELS), 2.0)),
        "fricative_hz": float(rng.uniform(2500.0, 6000.0)),
    }


def _resonator_sos(frequency, bandwidth, sample_rate):
    """Second-order section of a unity-DC-gain two-pole resonator."""
    r = numpy.exp(-numpy.pi * bandwidth / sample_rate)
    c = 2.0 * r * numpy.cos(2.0 * numpy.pi * frequency / sample_rate)
    return [1.0 - c + r * r, 0.0, 0.0, 1.0, -c, r * r]


def _glottal_source(f0, voice, rng, sample_rate):
    """Differentiated Rosenberg pulses following the pitch track ``f0`` (one per sample)."""
    # Jitter: cycle-to-cycle period noise, made smooth over about one cycle.
    noise = scipy.signal.lfilter([0.05], [1.0, -0.95], rng.standard_normal(f0.size))
    phase = numpy.cumsum(f0 * (1.0 + voice["jitter"] * noise * 4.0) / sample_rate)
    p = phase % 1.0
    rise, fall = 0.6 * voice["open_quotient"], 0.4 * voice["open_quotient"]
    pulse = numpy.zeros_like(p)
    opening = p < rise
    closing = ~opening & (p < rise + fall)
    pulse[opening] = 0.5 * (1.0 - numpy.cos(numpy.pi / rise * p[opening]))
    pulse[closing] = numpy.cos(0.5 * numpy.pi / fall * (p[closing] - rise))
    cycle = phase.astype(int)
    shimmer = 1.0 + voice["shimmer"] * rng.standard_normal(cycle[-1] + 1)
    pulse *= shimmer[cycle]
    # Breath noise is pitch-synchronous: strongest while the glottis is open.
    breath = voice["breathiness"] * rng.standard_normal(f0.size) * (0.3 + pulse)
    return numpy.diff(pulse, prepend=0.0) * sample_rate / (f0.mean() * 4.0) + breath


def synthesize_utterance(voice, seconds, rng, sample_rate=16000):
    """Synthesizes one utterance of a voice.

    Arguments
    ---------
    voice : dict
        From :func:`speaker_voice`.
    seconds : float
        Duration.
    rng : numpy.random.Generator
        Randomness of this utterance.
    sample_rate : int
        Output rate.

    Returns
    -------
    wav : numpy.ndarray
        Waveform (float32, peak about 0.5 times a random level).
    words : str
        Syllable labels ("s" onset + vowel), space-separated.
    """
    total = int(round(seconds * sample_rate))
    rate = numpy.exp(0.08 * rng.standard_normal())
    f0_utt = voice["f0"] * numpy.exp(0.04 * rng.standard_normal())
    # Syllable plan: (start, onset samples, vowel samples, vowel index, pitch accent).
    plan, words, start = [], [], int(rng.uniform(0.02, 0.1) * sample_rate)
    while start < total:
        onset = int(rng.uniform(0.02, 0.06) * sample_rate) if rng.random() < 0.6 else 0
        length = int(voice["syllable_seconds"] * rate * rng.uniform(0.7, 1.3) * sample_rate)
        vowel = rng.choice(len(VOWELS), p=voice["vowel_weights"])
        plan.append((start, onset, length, vowel, rng.uniform(-1.0, 1.0)))
        words.append(("s" if onset else "") + _VOWEL_NAMES[vowel])
        start += onset + length
        if rng.random() < 0.25:
            start += int(rng.uniform(0.05, 0.15) * sample_rate)
    end = plan[-1][0] + plan[-1][1] + plan[-1][2]
    # Pitch: declination over the utterance plus one accent per syllable, smoothed.
    t = numpy.arange(end)
    knots = [p[0] + p[1] + p[2] // 2 for p in plan]
    accents = [voice["intonation"] * p[4] for p in plan]
    f0 = f0_utt * numpy.exp(numpy.interp(t, knots, accents) - 0.15 * t / end)
    source = _glottal_source(f0, voice, rng, sample_rate)

    voiced_out, fricatives = numpy.zeros(end), numpy.zeros(end)
    zi = numpy.zeros((4, 2))
    for syl_start, onset, length, vowel, _ in plan:
        if onset:
            centre = voice["fricative_hz"] * rng.uniform(0.9, 1.1)
            sos = [_resonator_sos(min(centre, 0.45 * sample_rate), 1000.0, sample_rate)]
            burst = scipy.signal.sosfilt(sos, rng.standard_normal(onset)) * numpy.hanning(onset)
            # The resonator's gain depends on its centre: fix each burst's RMS instead.
            fricatives[syl_start : syl_start + onset] = burst / (burst.std() + 1e-9)
        begin = syl_start + onset
        formants = (
            _FORMANTS[vowel]
            * voice["formant_scale"]
            * voice["formant_offsets"]
            * numpy.exp(0.02 * rng.standard_normal(4))
        )
        formants = numpy.minimum(formants, 0.45 * sample_rate)
        sos = [
            _resonator_sos(f, b * voice["bandwidth_scale"], sample_rate)
            for f, b in zip(formants, _BANDWIDTHS)
        ]
        voiced, zi = scipy.signal.sosfilt(sos, source[begin : begin + length], zi=zi)
        attack = min(length // 3, int(0.03 * sample_rate))
        envelope = numpy.ones(length)
        envelope[:attack] = numpy.hanning(2 * attack)[:attack]
        envelope[length - attack :] = numpy.hanning(2 * attack)[attack:]
        voiced_out[begin : begin + length] = voiced * envelope
    # Fricatives about 10 dB below the vowels, as in speech.
    out = voiced_out + fricatives * 0.3 * voiced_out[voiced_out != 0].std()
    out = out[:total] if end >= total else numpy.pad(out, (0, total - end))

    # Channel: random spectral tilt, level and background noise.
    out = scipy.signal.lfilter([1.0, -rng.uniform(0.0, 0.3)], [1.0], out)
    out *= 0.5 * rng.uniform(0.3, 1.0) / (numpy.abs(out).max() + 1e-9)
    snr_db = rng.uniform(20.0, 40.0)
    noise_rms = numpy.sqrt(numpy.mean(out**2)) * 10.0 ** (-snr_db / 20.0)
    out += noise_rms * rng.standard_normal(total)
    return out.astype(numpy.float32), " ".join(words)


def make_synthetic_corpus(
    save_folder,
    num_speakers=20,
    num_test_speakers=5,
    utterances_per_speaker=20,
    seconds=2.0,
    duration_jitter=0.2,
    sample_rate=16000,
    audio_format="flac",
    dev_ratio=0.0,
    seed=0,
):
    """Writes a synthetic speaker corpus with CSVs and a held-out-speaker trial list.

    Layout: ``{save_folder}/audio/spk{N}/utt{M}.{flac|wav}`` (numbers zero-padded
    to 3 digits). Speakers ``0 .. num_speakers - num_test_speakers - 1`` form
    ``train.csv`` (and ``dev.csv`` with ``dev_ratio``); the others form
    ``test.csv`` and ``trials.txt`` (``label enroll test``, paths relative to the
    audio folder): every same-speaker pair and as many random different-speaker
    pairs. CSV columns: ``ID,duration,wav,spk_id,words,sample_rate,channels``
    (``words``: the syllable labels). Deterministic in ``seed``; a second call with
    the same options does nothing.

    Arguments
    ---------
    save_folder : str or os.PathLike
        Output folder.
    num_speakers : int
        Speakers in all.
    num_test_speakers : int
        Speakers held out for the trial list (at least 2).
    utterances_per_speaker : int
        Utterances of each speaker (at least 2).
    seconds : float
        Mean utterance duration.
    duration_jitter : float
        Durations are uniform in ``seconds * (1 +- duration_jitter)``.
    sample_rate : int
        Rate of the files.
    audio_format : str
        ``"flac"`` or ``"wav"``.
    dev_ratio : float
        Fraction of each training speaker's utterances held out as ``dev``.
    seed : int
        Seed of everything.

    Returns
    -------
    dict
        ``data_folder`` (the audio folder), ``train``, ``test`` (and ``dev``) CSV
        paths and ``trials`` (the trial list), as pathlib.Path.

    Example
    -------
    >>> corpus = make_synthetic_corpus(getfixture("tmp_path"), num_speakers=3,
    ...     num_test_speakers=2, utterances_per_speaker=2, seconds=0.3)
    >>> print(corpus["trials"].read_text(), end="")
    1 spk001/utt000.flac spk001/utt001.flac
    1 spk002/utt000.flac spk002/utt001.flac
    0 spk001/utt000.flac spk002/utt001.flac
    0 spk001/utt001.flac spk002/utt001.flac
    """
    if audio_format not in ("flac", "wav"):
        raise ValueError(f"audio_format must be 'flac' or 'wav', got {audio_format!r}")
    if not 2 <= num_test_speakers < num_speakers:
        raise ValueError(
            f"num_test_speakers must be in [2, num_speakers), got {num_test_speakers} "
            f"of {num_speakers}"
        )
    if utterances_per_speaker < 2:
        raise ValueError(f"utterances_per_speaker must be >= 2, got {utterances_per_speaker}")
    save_folder = pathlib.Path(save_folder)
    audio_folder = save_folder / "audio"
    outputs = {
        "train": save_folder / "train.csv",
        "test": save_folder / "test.csv",
        "trials": save_folder / "trials.txt",
    }
    if dev_ratio > 0:
        outputs["dev"] = save_folder / "dev.csv"
    options = {
        "num_speakers": num_speakers,
        "num_test_speakers": num_test_speakers,
        "utterances_per_speaker": utterances_per_speaker,
        "seconds": seconds,
        "duration_jitter": duration_jitter,
        "sample_rate": sample_rate,
        "audio_format": audio_format,
        "dev_ratio": dev_ratio,
        "seed": seed,
    }
    result = {"data_folder": audio_folder, **outputs}
    if preparation_done(save_folder, "synthetic", options, outputs.values()):
        return result

    entries = {"train": [], "test": []}
    infos = {}
    num_train = num_speakers - num_test_speakers
    for spk in range(num_speakers):
        voice = speaker_voice(spk, seed)
        spk_folder = audio_folder / f"spk{spk:03d}"
        spk_folder.mkdir(parents=True, exist_ok=True)
        for utt in range(utterances_per_speaker):
            rng = numpy.random.default_rng([seed, 2, spk, utt])
            length = seconds * rng.uniform(1.0 - duration_jitter, 1.0 + duration_jitter)
            wav, words = synthesize_utterance(voice, length, rng, sample_rate)
            rel = f"spk{spk:03d}/utt{utt:03d}.{audio_format}"
            path = audio_folder / rel
            soundfile.write(path, wav, sample_rate, subtype="PCM_16")
            infos[str(path)] = AudioInfo(sample_rate, 1, wav.size)
            split = "train" if spk < num_train else "test"
            entries[split].append(
                {"path": str(path), "rel": rel, "spk_id": f"spk{spk:03d}", "words": words}
            )
    rows = {name: build_rows(e, infos, {}) for name, e in entries.items()}
    if dev_ratio > 0:
        rows["train"], rows["dev"] = split_dev(rows["train"], dev_ratio, seed)
    for name, split_rows in rows.items():
        write_csv(outputs[name], split_rows)
    _write_trials(entries["test"], outputs["trials"], numpy.random.default_rng([seed, 3]))
    save_preparation_options(save_folder, "synthetic", options)
    logger.info(
        "synthetic corpus in %s: %d training and %d test speakers",
        save_folder,
        num_train,
        num_test_speakers,
    )
    return result


def _write_trials(test_entries, path, rng):
    """Every target pair, then as many random non-target pairs (no repeats)."""
    by_speaker = {}
    for entry in test_entries:
        by_speaker.setdefault(entry["spk_id"], []).append(entry["rel"])
    targets = [
        (1, a, b) for files in by_speaker.values() for a, b in itertools.combinations(files, 2)
    ]
    non_targets = [
        (0, a, b)
        for f1, f2 in itertools.combinations(by_speaker.values(), 2)
        for a in f1
        for b in f2
    ]
    chosen = rng.choice(len(non_targets), size=min(len(targets), len(non_targets)), replace=False)
    non_targets = [non_targets[i] for i in sorted(chosen)]
    with open(path, "w", encoding="utf-8") as f:
        for label, enroll, test in targets + non_targets:
            f.write(f"{label} {enroll} {test}\n")
