"""RTTM and UEM files: who spoke when, and which regions are scored.

RTTM (NIST Rich Transcription Time Marked) holds one ``SPEAKER`` line per speech segment::

    SPEAKER <recording> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>

UEM (un-partitioned evaluation map) holds one line per scored region::

    <recording> <channel> <start> <end>

Times are in seconds. In memory a recording's segments are ``(start, end, speaker)``
tuples and its regions ``(start, end)`` tuples, sorted by time. A line that does not
parse is a ``ValueError`` naming the file and the line number.
"""

import math
import os
import pathlib

_NA = "<NA>"
# The line types of NIST's RTTM (RT-09 evaluation plan); only SPEAKER lines are read.
_RTTM_TYPES = set(
    "SPEAKER SPKR-INFO SEGMENT NOSCORE NO_RT_METADATA LEXEME NON-LEX NON-SPEECH FILLER EDIT IP "
    "SU CB A/P".split()
)


def _check_field(value, what):
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} must be a non-empty name without spaces")


def _write_lines(path, lines):
    """Writes text lines atomically: a killed write leaves the previous file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def write_rttm(path, recording, segments):
    """Writes the segments of one recording as an RTTM file (atomically).

    Arguments
    ---------
    path : str or os.PathLike
        The RTTM file to write (its folder is created). No segments: an empty file.
    recording : str
        The recording field (the file stem of the audio, by convention).
    segments : list of (float, float, str)
        ``(start, end, speaker)`` in seconds; written sorted by start.

    Example
    -------
    >>> path = getfixture("tmp_path") / "talk.rttm"
    >>> write_rttm(path, "talk", [(1.5, 2.25, "B"), (0.0, 1.5, "A")])
    >>> print(path.read_text(), end="")
    SPEAKER talk 1 0.000 1.500 <NA> <NA> A <NA> <NA>
    SPEAKER talk 1 1.500 0.750 <NA> <NA> B <NA> <NA>
    """
    _check_field(recording, "recording")
    lines = []
    for start, end, speaker in sorted(segments):
        _check_field(str(speaker), "speaker")
        if not 0 <= start <= end:
            raise ValueError(
                f"{path}: segment ({start}, {end}) of {speaker} is not 0 <= start <= end"
            )
        lines.append(
            f"SPEAKER {recording} 1 {start:.3f} {end - start:.3f} {_NA} {_NA} {speaker} {_NA} {_NA}"
        )
    _write_lines(path, lines)


def write_uem(path, recording, regions):
    """Writes the scored regions of one recording as a UEM file (atomically).

    Arguments
    ---------
    path : str or os.PathLike
        The UEM file to write.
    recording : str
        The recording field.
    regions : list of (float, float)
        ``(start, end)`` in seconds.

    Example
    -------
    >>> path = getfixture("tmp_path") / "talk.uem"
    >>> write_uem(path, "talk", [(0.0, 12.5)])
    >>> path.read_text()
    'talk 1 0.000 12.500\\n'
    """
    _check_field(recording, "recording")
    _write_lines(path, [f"{recording} 1 {start:.3f} {end:.3f}" for start, end in sorted(regions)])


def _files(path_or_folder, suffixes):
    """The file itself, or the files of a folder with one of the suffixes (sorted)."""
    path = pathlib.Path(path_or_folder)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in suffixes and p.is_file())
        if not files:
            raise ValueError(f"{path}: no {' or '.join(suffixes)} files in this folder")
        return files
    if not path.is_file():
        raise ValueError(f"{path}: no such file or folder")
    return [path]


def _content_lines(path):
    """``(line number, fields)`` of the lines with content (``#`` starts a comment line)."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            yield number, fields


def _times(path, number, texts, names):
    """The floats of ``texts``; a one-line error naming file, line and field otherwise."""
    values = []
    for text, name in zip(texts, names):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{path}, line {number}: {name} {text!r} is not a time >= 0")
        values.append(value)
    return values


def _read_rttm_file(path, table):
    speaker_lines = 0
    for number, fields in _content_lines(path):
        if fields[0] not in _RTTM_TYPES:
            raise ValueError(f"{path}, line {number}: not an RTTM line (type {fields[0]!r})")
        if fields[0] != "SPEAKER":
            continue  # other types (SPKR-INFO, LEXEME, ...) say nothing about turns
        if len(fields) < 8:
            raise ValueError(
                f"{path}, line {number}: an RTTM SPEAKER line has at least 8 fields "
                f"(SPEAKER recording channel start duration <NA> <NA> speaker), got {len(fields)}"
            )
        start, duration = _times(path, number, fields[3:5], ("start", "duration"))
        # Rounded to the microsecond: 1.898 + 0.5 is 2.398, not 2.3979999999999997.
        table.setdefault(fields[1], []).append((start, round(start + duration, 6), fields[7]))
        speaker_lines += 1
    if speaker_lines == 0:
        # An empty RTTM is a recording without speech (the diarization of a silent file).
        table.setdefault(pathlib.Path(path).stem, [])


def _read_uem_file(path, table):
    for number, fields in _content_lines(path):
        if len(fields) != 4:
            raise ValueError(
                f"{path}, line {number}: a UEM line has 4 fields "
                f"(recording channel start end), got {len(fields)}"
            )
        start, end = _times(path, number, fields[2:4], ("start", "end"))
        if end < start:
            raise ValueError(f"{path}, line {number}: end {end} before start {start}")
        table.setdefault(fields[0], []).append((start, end))


def _sorted_values(table):
    return {recording: sorted(items) for recording, items in table.items()}


def read_rttm(path_or_folder):
    """Reads the speaker segments of an RTTM file, or of every ``*.rttm`` of a folder.

    Arguments
    ---------
    path_or_folder : str or os.PathLike
        An RTTM file or a folder of them. Lines other than ``SPEAKER`` are ignored; an
        RTTM without ``SPEAKER`` lines is its file stem's recording, without speech.

    Returns
    -------
    dict
        ``{recording: [(start, end, speaker), ...]}``, each list sorted by start.

    Example
    -------
    >>> path = getfixture("tmp_path") / "talk.rttm"
    >>> write_rttm(path, "talk", [(0.0, 1.5, "A"), (1.5, 2.25, "B")])
    >>> read_rttm(path)
    {'talk': [(0.0, 1.5, 'A'), (1.5, 2.25, 'B')]}
    >>> _ = path.write_text("SPEAKER talk 1 0.0 one <NA> <NA> A <NA> <NA>\\n")
    >>> read_rttm(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../talk.rttm, line 1: duration 'one' is not a time >= 0
    """
    table = {}
    for path in _files(path_or_folder, (".rttm",)):
        _read_rttm_file(path, table)
    return _sorted_values(table)


def read_uem(path):
    """Reads the scored regions of a UEM file (or of every ``*.uem`` of a folder).

    Arguments
    ---------
    path : str or os.PathLike
        A UEM file or a folder of them.

    Returns
    -------
    dict
        ``{recording: [(start, end), ...]}``, each list sorted by start.

    Example
    -------
    >>> path = getfixture("tmp_path") / "talk.uem"
    >>> _ = path.write_text("talk 1 0.00 12.50\\n")
    >>> read_uem(path)
    {'talk': [(0.0, 12.5)]}
    """
    table = {}
    for file in _files(path, (".uem",)):
        _read_uem_file(file, table)
    return _sorted_values(table)


def union_regions(regions):
    """The union of time regions, as sorted disjoint regions.

    Arguments
    ---------
    regions : iterable of (float, float, ...)
        ``(start, end)`` pairs; further fields (e.g. a speaker) are ignored.

    Returns
    -------
    list of (float, float)
        Regions that touch or overlap become one.

    Example
    -------
    >>> union_regions([(2.0, 3.0, "B"), (0.0, 1.0, "A"), (0.5, 2.0, "B"), (4.0, 5.0, "A")])
    [(0.0, 3.0), (4.0, 5.0)]
    """
    merged = []
    for start, end, *_ in sorted(regions):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _is_rttm(path):
    if path.suffix in (".rttm", ".uem"):
        return path.suffix == ".rttm"
    first = next(_content_lines(path), (None, [""]))[1]
    return first[0] == "SPEAKER"


def read_segments(path):
    """Speech regions from an RTTM (the union of its speakers' segments) or a UEM.

    Arguments
    ---------
    path : str or os.PathLike
        An RTTM or UEM file (told apart by the suffix ``.rttm``/``.uem``, else by a
        first line starting with ``SPEAKER``), or a folder of ``*.rttm`` and ``*.uem``
        files.

    Returns
    -------
    dict
        ``{recording: [(start, end), ...]}``: sorted disjoint regions.

    Example
    -------
    >>> path = getfixture("tmp_path") / "talk.rttm"
    >>> write_rttm(path, "talk", [(0.0, 1.5, "A"), (1.0, 2.0, "B"), (3.0, 4.0, "A")])
    >>> read_segments(path)
    {'talk': [(0.0, 2.0), (3.0, 4.0)]}
    """
    table = {}
    for file in _files(path, (".rttm", ".uem")):
        file_table = read_rttm(file) if _is_rttm(file) else read_uem(file)
        for recording, items in file_table.items():
            table.setdefault(recording, []).extend(items)
    return {recording: union_regions(items) for recording, items in table.items()}
