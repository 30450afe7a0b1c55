"""Simulated conversations with exact truth, from any speaker-labelled corpus.

A conversation is a sequence of turns: each turn is one or more utterances of one
speaker, separated by short pauses; turns are separated by longer pauses, or with
``overlap_probability`` start before the previous turn has ended (at most two speakers at
once, by at most ``max_overlap`` seconds). Every speaker chosen for a conversation speaks;
consecutive turns have different speakers.

The truth is exact by construction: each placed utterance is one RTTM segment, and the
segment is exactly the samples placed. With ``trim_db`` an utterance is first cut to its
loudest part (:func:`trim_silence`: from the first to the last 10 ms frame whose energy is
within ``trim_db`` dB of the loudest frame), so that the leading and trailing silence of
a corpus clip is not counted as speech; the pauses between utterances are digital
silence. All times are on a 1 ms grid, which RTTM's three decimals hold exactly.

For each conversation ``<name>.wav`` (16 kHz, 16-bit; overlapped samples beyond full
scale are clipped), ``<name>.rttm`` and ``<name>.uem`` (the whole recording) are
written, and ``conversations.csv`` lists every placed utterance (conversation, speaker,
start, end, source file and the offset in it). The same seed gives the same files.

Command line::

    python -m speechbrain_w2vbert_sv.applications.conversations \\
        --data_folder ../shared/data/arabic_speech_commands --file_list val.csv \\
        --speaker_regex '(?:^|/)(\\d{8})_NO_\\d+\\.\\w+$' --output_folder conversations \\
        --num_conversations 10 --speakers 2 6
"""

import argparse
import logging
import os
import pathlib
import sys

import numpy as np
import soundfile

from speechbrain_w2vbert_sv.applications.rttm import write_rttm, write_uem
from speechbrain_w2vbert_sv.data.audio import AudioFileError, load_audio
from speechbrain_w2vbert_sv.data.csv_io import read_csv, write_csv

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_MS = SAMPLE_RATE // 1000  # samples per millisecond: the grid of every time
_TRIM_FRAME = 10 * _MS
MANIFEST = "conversations.csv"


def trim_silence(wav, trim_db=40.0):
    """The loud part of an utterance: leading and trailing quiet frames cut.

    Arguments
    ---------
    wav : numpy.ndarray
        ``[S]`` samples at 16 kHz.
    trim_db : float or None
        Frames (10 ms) more than this many dB below the loudest frame are silence when
        they lead or trail; None keeps the whole utterance.

    Returns
    -------
    (int, int)
        First and end sample of the part kept, on the 1 ms grid (10 ms when trimmed).

    Example
    -------
    >>> wav = np.zeros(16000, dtype=np.float32)
    >>> wav[4000:9000] = np.sin(np.arange(5000) / 5)
    >>> wav[12000:12160] = 0.001 * np.sin(np.arange(160) / 5)  # -60 dB: silence
    >>> trim_silence(wav)
    (4000, 9120)
    >>> trim_silence(wav, None)
    (0, 16000)
    """
    whole = (0, len(wav) - len(wav) % _MS)
    frames = len(wav) // _TRIM_FRAME
    if trim_db is None or frames == 0:
        return whole
    power = np.square(wav[: frames * _TRIM_FRAME].reshape(frames, _TRIM_FRAME), dtype=np.float64)
    level = 10 * np.log10(power.mean(axis=1) + 1e-20)
    loud = np.flatnonzero(level >= level.max() - trim_db)
    return int(loud[0]) * _TRIM_FRAME, int(loud[-1] + 1) * _TRIM_FRAME


def utterances_from_csv(path):
    """``(wav, speaker)`` pairs of a SpeechBrain CSV (columns ``wav`` and ``spk_id``).

    Arguments
    ---------
    path : str or os.PathLike
        A CSV as this package's preparations write.

    Returns
    -------
    list of (str, str)

    Example
    -------
    >>> path = getfixture("tmp_path") / "x.csv"
    >>> write_csv(path, [{"ID": "a", "duration": 1.0, "wav": "/d/a.wav", "spk_id": "s1"}])
    >>> utterances_from_csv(path)
    [('/d/a.wav', 's1')]
    """
    rows = read_csv(path)
    if rows and not {"wav", "spk_id"} <= set(rows[0]):
        raise ValueError(f"{path}: a corpus CSV needs the columns wav and spk_id")
    return [(row["wav"], row["spk_id"]) for row in rows]


def utterances_from_folder(data_folder, speaker_regex, save_folder, file_list=None):
    """``(wav, speaker)`` pairs of a corpus folder, the speaker read from each path.

    The files are checked and listed by
    :func:`~speechbrain_w2vbert_sv.data.generic.prepare_folder_corpus` (unusable files
    are reported in ``save_folder/skipped.txt`` and left out).

    Arguments
    ---------
    data_folder : str or os.PathLike
        Corpus root.
    speaker_regex : str
        Finds the speaker in a path relative to the root (group ``value``, else 1).
    save_folder : str or os.PathLike
        Where the corpus CSV is written (and reused by a later call).
    file_list : str or os.PathLike, optional
        The files to use (text or CSV list, relative to ``data_folder``); default: all.

    Returns
    -------
    list of (str, str)
    """
    from speechbrain_w2vbert_sv.data.generic import find_audio_files, prepare_folder_corpus

    files = file_list if file_list is not None else find_audio_files(data_folder)
    csvs = prepare_folder_corpus(
        data_folder, save_folder, speaker_regex, file_lists={"utterances": files}
    )
    return utterances_from_csv(csvs["utterances"])


class _Utterances:
    """The corpus by speaker, read (at 16 kHz, trimmed) when first placed."""

    def __init__(self, utterances, trim_db):
        self.by_speaker = {}
        for wav, speaker in utterances:
            self.by_speaker.setdefault(speaker, []).append(wav)
        self.trim_db = trim_db
        self.loaded = {}

    def read(self, path):
        """``(samples, offset)``: the kept part of a file and its first sample in it;
        None for an unreadable file (reported once)."""
        if path not in self.loaded:
            try:
                wav = load_audio(path, SAMPLE_RATE).numpy()
            except AudioFileError as error:
                logger.warning("%s: left out", error)
                self.loaded[path] = None
            else:
                start, end = trim_silence(wav, self.trim_db)
                self.loaded[path] = (wav[start:end], start) if end > start else None
        return self.loaded[path]

    def draw(self, rng, speaker, order):
        """The next usable utterance of a speaker: ``(path, samples, offset)``."""
        paths = self.by_speaker[speaker]
        for _ in range(len(paths)):
            if not order[speaker]:
                order[speaker] = list(rng.permutation(len(paths)))
            path = paths[order[speaker].pop()]
            kept = self.read(path)
            if kept is not None:
                return (path, *kept)
        raise ValueError(f"speaker {speaker}: none of its {len(paths)} files is usable")


def _ms(rng, bounds):
    """A random duration in samples, on the 1 ms grid, uniform in ``bounds`` seconds."""
    return int(round(rng.uniform(*bounds) * 1000)) * _MS


def _turn_speakers(rng, speakers, num_turns):
    """Every speaker once (random order) first, then random others, never twice in a row."""
    order = [speakers[i] for i in rng.permutation(len(speakers))]
    while len(order) < num_turns and len(speakers) > 1:
        others = [s for s in speakers if s != order[-1]]
        order.append(others[rng.integers(len(others))])
    return order


def _plan(rng, corpus, options):
    """The placements ``(start sample, speaker, path, samples, offset)`` of one
    conversation, and its length in samples."""
    low, high = options["speakers"]
    speakers = sorted(corpus.by_speaker)
    count = int(rng.integers(low, high + 1))
    chosen = [speakers[i] for i in sorted(rng.choice(len(speakers), count, replace=False))]
    num_turns = max(count, int(rng.integers(options["turns"][0], options["turns"][1] + 1)))
    order = {speaker: [] for speaker in chosen}
    margin = int(round(options["margin"] * 1000)) * _MS
    max_overlap = int(round(options["max_overlap"] * 1000)) * _MS
    placements = []
    previous = None  # (start of the last utterance, end) of the previous turn
    before_previous = 0  # end of the speech before the previous turn
    for speaker in _turn_speakers(rng, chosen, num_turns):
        count_low, count_high = options["utterances_per_turn"]
        turn = [
            corpus.draw(rng, speaker, order) for _ in range(rng.integers(count_low, count_high + 1))
        ]
        if previous is None:
            start = margin
        else:
            # An overlap stays within the previous turn's last utterance and this turn's
            # first one, so that at most two speakers talk at once.
            last_start, end = previous
            room = min(end - max(last_start, before_previous), len(turn[0][1]), max_overlap)
            if room >= _MS and rng.random() < options["overlap_probability"]:
                start = end - int(rng.integers(1, room // _MS + 1)) * _MS
            else:
                start = end + _ms(rng, options["pause"])
            before_previous = max(before_previous, end)
        turn_end = 0
        for index, (path, samples, offset) in enumerate(turn):
            if index:
                start = turn_end + _ms(rng, options["within_turn_pause"])
            placements.append((start, speaker, path, samples, offset))
            turn_end = max(turn_end, start + len(samples))
        previous = (start, turn_end)
    return placements, max(s + len(x) for s, _, _, x, _ in placements) + margin


def _write_wav(path, samples):
    """16-bit WAV, atomically (a killed run leaves no half file under the final name).

    Rounded to the nearest step (libsndfile's own conversion truncates), clipped to full
    scale."""
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    tmp = path.with_name(path.name + ".tmp")
    soundfile.write(tmp, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def simulate_conversations(
    utterances,
    output_folder,
    num_conversations,
    speakers=(2, 6),
    turns=(10, 20),
    utterances_per_turn=(1, 4),
    pause=(0.2, 1.0),
    within_turn_pause=(0.05, 0.3),
    overlap_probability=0.0,
    max_overlap=1.0,
    trim_db=40.0,
    margin=0.5,
    seed=1234,
    name="conversation",
):
    """Writes simulated conversations with their RTTM and UEM truth.

    Arguments
    ---------
    utterances : list of (str, str)
        ``(audio path, speaker)`` of the corpus (any rate: read at 16 kHz).
    output_folder : str or os.PathLike
        Where ``<name>_<index>.wav/.rttm/.uem`` and ``conversations.csv`` go.
    num_conversations : int
        How many conversations.
    speakers : (int, int)
        Fewest and most speakers of a conversation (uniform).
    turns : (int, int)
        Fewest and most turns (at least one per speaker).
    utterances_per_turn : (int, int)
        Fewest and most utterances of a turn.
    pause : (float, float)
        Range of the pause between turns, in seconds (uniform).
    within_turn_pause : (float, float)
        Range of the pause between the utterances of a turn, in seconds.
    overlap_probability : float
        Probability that a turn starts before the previous one ends.
    max_overlap : float
        Longest overlap, in seconds (also at most the previous turn's last utterance
        and the new turn's first one).
    trim_db : float or None
        Leading and trailing silence rule of :func:`trim_silence`; None: no trimming.
    margin : float
        Silence at the start and the end of each conversation, in seconds.
    seed : int
        Seed; conversation ``i`` depends only on ``(seed, i)`` and the corpus.
    name : str
        Prefix of the recording names.

    Returns
    -------
    list of dict
        The rows of ``conversations.csv``: one per placed utterance.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> corpus = []
    >>> for speaker in ("ann", "bob"):
    ...     for i in range(3):
    ...         path = folder / f"{speaker}{i}.wav"
    ...         soundfile.write(path, 0.1 * np.ones(8000), 8000)
    ...         corpus.append((str(path), speaker))
    >>> rows = simulate_conversations(corpus, folder / "out", 1, speakers=(2, 2), turns=(3, 3),
    ...                               utterances_per_turn=(1, 1))
    >>> [row["speaker"] for row in rows] in (["ann", "bob", "ann"], ["bob", "ann", "bob"])
    True
    >>> sorted(p.name for p in (folder / "out").iterdir())
    ['conversation_000.rttm', 'conversation_000.uem', 'conversation_000.wav', 'conversations.csv']
    """
    options = dict(
        speakers=speakers,
        turns=turns,
        utterances_per_turn=utterances_per_turn,
        pause=pause,
        within_turn_pause=within_turn_pause,
        overlap_probability=overlap_probability,
        max_overlap=max_overlap,
        margin=margin,
    )
    for key in ("speakers", "turns", "utterances_per_turn", "pause", "within_turn_pause"):
        low, high = options[key]
        least = 1 if key in ("speakers", "turns", "utterances_per_turn") else 0
        if not least <= low <= high:
            raise ValueError(f"{key} ({low}, {high}) must be a range {least} <= low <= high")
    corpus = _Utterances(utterances, trim_db)
    if len(corpus.by_speaker) < speakers[1]:
        raise ValueError(
            f"up to {speakers[1]} speakers asked for, the corpus has {len(corpus.by_speaker)}"
        )
    output_folder = pathlib.Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(num_conversations):
        recording = f"{name}_{index:03d}"
        placements, length = _plan(np.random.default_rng([seed, index]), corpus, options)
        mix = np.zeros(length, dtype=np.float32)
        segments = []
        for start, speaker, path, samples, offset in placements:
            mix[start : start + len(samples)] += samples
            segments.append((start / SAMPLE_RATE, (start + len(samples)) / SAMPLE_RATE, speaker))
            rows.append(
                {
                    "conversation": recording,
                    "speaker": speaker,
                    "start": f"{segments[-1][0]:.3f}",
                    "end": f"{segments[-1][1]:.3f}",
                    "wav": path,
                    "offset": f"{offset / SAMPLE_RATE:.3f}",
                }
            )
        _write_wav(output_folder / f"{recording}.wav", mix)
        write_rttm(output_folder / f"{recording}.rttm", recording, segments)
        write_uem(output_folder / f"{recording}.uem", recording, [(0.0, length / SAMPLE_RATE)])
        logger.info(
            "%s: %.1f s, %d speakers, %d utterances",
            recording,
            length / SAMPLE_RATE,
            len({s for _, s, *_ in placements}),
            len(placements),
        )
    write_csv(output_folder / MANIFEST, rows)
    return rows


def build_parser():
    """The command line of the simulation."""
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_w2vbert_sv.applications.conversations",
        description="Simulated conversations (wav, RTTM, UEM) from a speaker-labelled corpus.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="corpus CSV with wav and spk_id columns")
    source.add_argument("--data_folder", help="corpus folder (with --speaker_regex)")
    parser.add_argument("--speaker_regex", help="finds the speaker in a path under data_folder")
    parser.add_argument(
        "--file_list", default=None, help="files to use, relative to data_folder (default: all)"
    )
    parser.add_argument("--output_folder", required=True)
    parser.add_argument("--num_conversations", type=int, required=True)
    for flag, kind, default, text in (
        ("--speakers", int, (2, 6), "fewest and most speakers"),
        ("--turns", int, (10, 20), "fewest and most turns"),
        ("--utterances_per_turn", int, (1, 4), "fewest and most utterances of a turn"),
        ("--pause", float, (0.2, 1.0), "pause between turns, seconds"),
        ("--within_turn_pause", float, (0.05, 0.3), "pause within a turn, seconds"),
    ):
        parser.add_argument(
            flag, type=kind, nargs=2, default=default, metavar=("MIN", "MAX"), help=text
        )
    parser.add_argument("--overlap_probability", type=float, default=0.0)
    parser.add_argument("--max_overlap", type=float, default=1.0, help="seconds")
    parser.add_argument(
        "--trim_db", type=float, default=40.0, help="leading/trailing silence: dB below peak"
    )
    parser.add_argument("--no_trim", action="store_true", help="place whole utterances")
    parser.add_argument("--margin", type=float, default=0.5, help="silence at both ends, seconds")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--name", default="conversation", help="recording name prefix")
    return parser


def main(argv=None):
    """Command line entry; bad input exits with one line."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.csv is not None:
            utterances = utterances_from_csv(args.csv)
        elif args.speaker_regex is None:
            raise ValueError("--data_folder needs --speaker_regex")
        else:
            utterances = utterances_from_folder(
                args.data_folder,
                args.speaker_regex,
                pathlib.Path(args.output_folder) / "corpus",
                file_list=args.file_list,
            )
        simulate_conversations(
            utterances,
            args.output_folder,
            args.num_conversations,
            speakers=tuple(args.speakers),
            turns=tuple(args.turns),
            utterances_per_turn=tuple(args.utterances_per_turn),
            pause=tuple(args.pause),
            within_turn_pause=tuple(args.within_turn_pause),
            overlap_probability=args.overlap_probability,
            max_overlap=args.max_overlap,
            trim_db=None if args.no_trim else args.trim_db,
            margin=args.margin,
            seed=args.seed,
            name=args.name,
        )
    except ValueError as error:
        sys.exit(f"conversations: error: {error}")
    print(f"{args.num_conversations} conversations written to {args.output_folder}")


if __name__ == "__main__":
    main()
