"""Diarization error rate (DER) and Jaccard error rate (JER), by pyannote.metrics.

pyannote.metrics is the field's reference implementation (optimal speaker mapping,
collars, overlap handling); this module turns RTTM/UEM tables (:mod:`.rttm`) into its
``Annotation`` objects and reports per recording and in total. The collar follows
NIST's md-eval (``-c 0.25``, as AMI, CALLHOME and DIHARD results are quoted): seconds
removed on EACH side of every reference boundary, which is pyannote.metrics'
``collar=0.5`` (its collar is the whole width).
"""

import logging
from dataclasses import dataclass

from speechbrain_w2vbert_sv.applications.rttm import read_rttm, read_uem, union_regions

logger = logging.getLogger(__name__)

_NAMES = ("der", "miss", "false_alarm", "confusion", "jer")


@dataclass(frozen=True)
class DiarizationScore:
    """DER, its components and JER, as fractions of the scored reference speech.

    Attributes
    ----------
    der, miss, false_alarm, confusion : float
        DER and its three parts (``der = miss + false_alarm + confusion``); where there
        is no reference speech, 0 without error and 1 with (pyannote.metrics' rule).
    jer : float
        Jaccard error rate (the mean over reference speakers of 1 - their Jaccard index
        with the mapped hypothesis speaker).
    speech : float
        Scored reference speech, in seconds (overlapped speech counts once per speaker).
    recording : str or None
        The recording; None for a total.

    Example
    -------
    >>> DiarizationScore(0.25, 0.1, 0.05, 0.1, 0.3, 12.0, "talk").line().split()
    ['recording=talk', 'speech=12.000', 'der=0.2500', 'miss=0.1000', 'false_alarm=0.0500',
     'confusion=0.1000', 'jer=0.3000']
    """

    der: float
    miss: float
    false_alarm: float
    confusion: float
    jer: float
    speech: float
    recording: str = None

    def line(self):
        """``key=value`` pairs; a total's line holds the rates only."""
        rates = " ".join(f"{name}={getattr(self, name):.4f}" for name in _NAMES)
        if self.recording is None:
            return rates
        return f"recording={self.recording} speech={self.speech:.3f} {rates}"


def annotation(recording, segments):
    """A pyannote.core ``Annotation`` of ``(start, end, speaker)`` segments.

    Arguments
    ---------
    recording : str
        Its uri.
    segments : list of (float, float, str)
        Speaker segments in seconds; overlapping segments of one speaker count once.

    Returns
    -------
    pyannote.core.Annotation

    Example
    -------
    >>> turns = annotation("talk", [(0.0, 1.5, "A"), (1.0, 2.0, "B"), (0.5, 1.8, "A")])
    >>> turns.uri, turns.label_duration("A"), turns.label_duration("B")
    ('talk', 1.8, 1.0)
    """
    from pyannote.core import Annotation, Segment

    by_speaker = {}
    for start, end, speaker in segments:
        by_speaker.setdefault(speaker, []).append((start, end))
    turns = Annotation(uri=recording)
    for speaker, regions in by_speaker.items():
        # pyannote.metrics would count a speaker's overlapping tracks twice.
        for track, (start, end) in enumerate(union_regions(regions)):
            if end > start:
                turns[Segment(start, end), track] = speaker
    return turns


def _scored_regions(uem, recording, reference, hypothesis):
    """The recording's UEM as a Timeline; without a UEM, the extent of all its segments
    (what pyannote.metrics would approximate, with a warning per recording)."""
    from pyannote.core import Segment, Timeline

    if uem is not None:
        if recording not in uem:
            raise ValueError(f"the UEM has no region for recording {recording}")
        return Timeline([Segment(start, end) for start, end in uem[recording] if end > start])
    times = [t for start, end, _ in reference + hypothesis for t in (start, end)]
    return Timeline([Segment(min(times), max(times))] if times else [])


def _rates(components, der, jer, recording=None):
    total = components["total"]

    def rate(name):
        if total > 0:
            return components[name] / total
        return float(components[name] > 0)

    return DiarizationScore(
        der=der,
        miss=rate("missed detection"),
        false_alarm=rate("false alarm"),
        confusion=rate("confusion"),
        jer=jer,
        speech=total,
        recording=recording,
    )


def _check_recordings(reference, hypothesis):
    """Recordings of one side only: warned about, and which way each is scored."""
    unreferenced = sorted(set(hypothesis) - set(reference))
    if unreferenced:
        logger.warning(
            "%d recording(s) of the hypothesis have no reference and are not scored: %s",
            len(unreferenced),
            ", ".join(unreferenced),
        )
    missing = sorted(set(reference) - set(hypothesis))
    if missing:
        logger.warning(
            "%d recording(s) of the reference have no hypothesis and are scored as all "
            "missed speech: %s",
            len(missing),
            ", ".join(missing),
        )
    if not reference:
        raise ValueError("the reference has no recording")


def score_diarization(reference, hypothesis, collar=0.25, skip_overlap=False, uem=None):
    """DER and JER of hypothesis segments against reference segments.

    Arguments
    ---------
    reference, hypothesis : dict
        ``{recording: [(start, end, speaker), ...]}`` (as :func:`.rttm.read_rttm` gives).
        Every reference recording is scored; one without hypothesis counts as all missed
        speech, and hypothesis recordings without reference are left out (both with a
        warning).
    collar : float
        Seconds on each side of each reference boundary left out of the scoring.
    skip_overlap : bool
        Leave reference regions with several speakers out of the scoring.
    uem : dict or None
        ``{recording: [(start, end), ...]}``, the regions scored; default: from the first
        to the last boundary of each recording's reference and hypothesis.

    Returns
    -------
    scores : list of DiarizationScore
        One per reference recording, sorted by name.
    total : DiarizationScore
        Over all of them (time-weighted as pyannote.metrics accumulates).

    Example
    -------
    >>> reference = {"talk": [(0.0, 4.0, "A"), (4.0, 8.0, "B")]}
    >>> hypothesis = {"talk": [(0.0, 5.0, "spk0"), (5.0, 7.0, "spk1")]}
    >>> scores, total = score_diarization(reference, hypothesis, collar=0.0)
    >>> total.line()
    'der=0.2500 miss=0.1250 false_alarm=0.0000 confusion=0.1250 jer=0.3500'
    """
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    _check_recordings(reference, hypothesis)
    # pyannote.metrics' collar is the width of the removed region around a boundary.
    der_metric = DiarizationErrorRate(collar=2 * collar, skip_overlap=skip_overlap)
    jer_metric = JaccardErrorRate(collar=2 * collar, skip_overlap=skip_overlap)
    scores = []
    for recording in sorted(reference):
        ref_segments = reference[recording]
        hyp_segments = hypothesis.get(recording, [])
        regions = _scored_regions(uem, recording, ref_segments, hyp_segments)
        ref, hyp = annotation(recording, ref_segments), annotation(recording, hyp_segments)
        components = der_metric(ref, hyp, uem=regions, detailed=True)
        jer = jer_metric(ref, hyp, uem=regions)
        scores.append(_rates(components, components["diarization error rate"], jer, recording))
    total = _rates(der_metric.accumulated_, abs(der_metric), abs(jer_metric))
    return scores, total


def score_rttm(reference, hypothesis, collar=0.25, skip_overlap=False, uem=None):
    """:func:`score_diarization` of RTTM files or folders (recordings matched by name).

    Arguments
    ---------
    reference, hypothesis : str or os.PathLike
        RTTM files, or folders of ``*.rttm`` files.
    collar : float
        Seconds on each side of each reference boundary left out of the scoring.
    skip_overlap : bool
        Leave overlapped reference speech out of the scoring.
    uem : str or os.PathLike or None
        A UEM file (or folder) of the regions scored.

    Returns
    -------
    scores : list of DiarizationScore
        One per reference recording.
    total : DiarizationScore
        Over all of them.

    Example
    -------
    >>> from speechbrain_w2vbert_sv.applications.rttm import write_rttm
    >>> folder = getfixture("tmp_path")
    >>> write_rttm(folder / "ref.rttm", "talk", [(0.0, 4.0, "A"), (4.0, 8.0, "B")])
    >>> write_rttm(folder / "hyp.rttm", "talk", [(0.0, 4.1, "1"), (4.1, 8.0, "2")])
    >>> scores, total = score_rttm(folder / "ref.rttm", folder / "hyp.rttm")
    >>> total.der
    0.0
    """
    reference_segments = read_rttm(reference)
    regions = None
    if uem is not None:
        regions = read_uem(uem)
        missing = sorted(set(reference_segments) - set(regions))
        if missing:
            raise ValueError(f"{uem}: no region for recording(s) {', '.join(missing)}")
    return score_diarization(
        reference_segments,
        read_rttm(hypothesis),
        collar=collar,
        skip_overlap=skip_overlap,
        uem=regions,
    )
