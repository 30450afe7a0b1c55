"""Trial lists and score files.

:class:`Trials` is the one reader of verification trial lists (``label enroll test``
per line, plain or gzip-compressed): it keeps each distinct utterance once and the
trials as index arrays into that list, so that scoring gathers rows of one utterance
matrix.

A trial's enrollment side may be a speaker *model* made of several utterances (CN-Celeb's
``CNC-Eval`` protocol): an enrollment map (``model utt1 utt2 ...`` per line, CN-Celeb's
``enroll.map``, Kaldi's ``spk2utt``) names them. The model is then one row of the
utterance matrix like any utterance: the mean of its utterances' embeddings
(:func:`~speechbrain_w2vbert_sv.scoring.cosine.trial_matrix`), so scoring, s-norm,
calibration and metrics run unchanged.
"""

import gzip
import os
import random
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

_GZIP_MAGIC = b"\x1f\x8b"


def _open_text(path):
    """Opens a text file for reading, decompressing it when it is gzip."""
    with open(path, "rb") as f:
        compressed = f.read(2) == _GZIP_MAGIC
    if compressed:
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


@dataclass(frozen=True, eq=False)
class Trials:
    """A verification trial list, with utterances indexed once.

    Attributes
    ----------
    labels : numpy.ndarray
        [T] int8, 1 for a target (same speaker) trial, 0 otherwise.
    enroll_index : numpy.ndarray
        [T] int64 row of each trial's enrollment utterance in ``utterances``.
    test_index : numpy.ndarray
        [T] int64 row of each trial's test utterance in ``utterances``.
    utterances : tuple of str
        The sorted distinct utterance ids (as written in the list, e.g.
        ``id10270/x6uYqmx31kE/00001.wav``).
    source : str
        Where the list was read from (for messages).
    line_numbers : numpy.ndarray or None
        [T] line of each trial in its file (for messages; None for a list built in
        memory).
    enrollments : Mapping
        Model id -> tuple of its utterances, for the ids of ``utterances`` that are
        multi-utterance speaker models (empty for a plain list).

    Example
    -------
    >>> trials = Trials.from_lists([1, 0], ["a.wav", "a.wav"], ["b.wav", "c.wav"])
    >>> len(trials), trials.utterances, trials.test_ids
    (2, ('a.wav', 'b.wav', 'c.wav'), ['b.wav', 'c.wav'])
    >>> trials.paths("/data/wav")[0]
    '/data/wav/a.wav'
    >>> trials.subset([False, True]).utterances
    ('a.wav', 'c.wav')
    >>> enrollments = {"spk1": ["a.wav", "b.wav"]}
    >>> models = Trials.from_lists([1], ["spk1"], ["c.wav"], enrollments=enrollments)
    >>> models.utterances, models.files, models.members("spk1")
    (('c.wav', 'spk1'), ['a.wav', 'b.wav', 'c.wav'], ('a.wav', 'b.wav'))
    """

    labels: np.ndarray
    enroll_index: np.ndarray
    test_index: np.ndarray
    utterances: tuple
    source: str = "<memory>"
    line_numbers: np.ndarray = None
    enrollments: types.MappingProxyType = field(default_factory=lambda: types.MappingProxyType({}))

    @classmethod
    def from_lists(
        cls, labels, enroll_ids, test_ids, source="<memory>", line_numbers=None, enrollments=None
    ):
        """Builds a trial list from parallel sequences of labels and ids.

        Arguments
        ---------
        labels : sequence of int
            0/1 label of each trial.
        enroll_ids : sequence of str
            Enrollment utterance of each trial.
        test_ids : sequence of str
            Test utterance of each trial.
        source : str
            Name used in messages.
        line_numbers : sequence of int, optional
            Line of each trial in its file.
        enrollments : Mapping, optional
            Model id -> its utterances (see :func:`read_enrollment_map`); an id of
            the trials found here is a multi-utterance model. Models no trial uses
            are dropped.

        Returns
        -------
        Trials
        """
        if not len(labels) == len(enroll_ids) == len(test_ids):
            raise ValueError(
                f"{source}: labels, enroll_ids and test_ids differ in length "
                f"({len(labels)}, {len(enroll_ids)}, {len(test_ids)})"
            )
        if len(labels) == 0:
            raise ValueError(f"{source}: the trial list is empty")
        labels = np.asarray(labels, dtype=np.int8)
        if ((labels != 0) & (labels != 1)).any():
            raise ValueError(f"{source}: labels must be 0 or 1")
        utterances = tuple(sorted(set(enroll_ids).union(test_ids)))
        row = {utt: i for i, utt in enumerate(utterances)}
        count = len(labels)
        enroll_index = np.fromiter(map(row.__getitem__, enroll_ids), np.int64, count)
        test_index = np.fromiter(map(row.__getitem__, test_ids), np.int64, count)
        if line_numbers is not None:
            line_numbers = np.asarray(line_numbers, dtype=np.int64)
        models = {}
        for utt in utterances:
            members = (enrollments or {}).get(utt)
            if members is not None:
                if not members:
                    raise ValueError(f"{source}: enrollment model {utt!r} has no utterance")
                models[utt] = tuple(members)
        return cls(
            labels,
            enroll_index,
            test_index,
            utterances,
            str(source),
            line_numbers,
            types.MappingProxyType(models),
        )

    def __len__(self):
        return int(self.labels.shape[0])

    @property
    def enroll_ids(self):
        """The enrollment id of every trial (a list of str)."""
        return [self.utterances[i] for i in self.enroll_index]

    @property
    def test_ids(self):
        """The test id of every trial (a list of str)."""
        return [self.utterances[i] for i in self.test_index]

    def members(self, utterance):
        """The utterances (audio files) behind an id of ``utterances``: a model's
        enrollment utterances, or the utterance itself (a tuple of str)."""
        return self.enrollments.get(utterance, (utterance,))

    @property
    def files(self):
        """The distinct audio files in order of first appearance in the list (a
        model's enrollment utterances where the model appears)."""
        order = np.stack([self.enroll_index, self.test_index], axis=1).reshape(-1)
        _, first = np.unique(order, return_index=True)
        ids = (self.members(self.utterances[order[i]]) for i in np.sort(first))
        return list(dict.fromkeys(f for members in ids for f in members))

    def paths(self, root):
        """The utterances as paths under ``root`` (the dataset's wav folder)."""
        return [os.path.join(root, utt) for utt in self.utterances]

    def subset(self, keep):
        """The trials where ``keep`` is true, with the utterances they still use.

        Arguments
        ---------
        keep : sequence of bool
            One flag per trial.

        Returns
        -------
        Trials
        """
        pick = np.flatnonzero(np.asarray(keep, dtype=bool))
        if len(pick) == 0:
            raise ValueError(f"{self.source}: no trial is left")
        utterances = self.utterances
        return Trials.from_lists(
            self.labels[pick],
            [utterances[i] for i in self.enroll_index[pick]],
            [utterances[i] for i in self.test_index[pick]],
            self.source,
            None if self.line_numbers is None else self.line_numbers[pick],
            self.enrollments,
        )

    def sample_utterances(self, max_utterances, seed):
        """The trials among a random subset of ``max_utterances`` utterances.

        Arguments
        ---------
        max_utterances : int
            How many utterances to keep (0 or at least their number: all trials).
        seed : int
            Seed of the choice.

        Returns
        -------
        Trials
        """
        if not max_utterances or max_utterances >= len(self.utterances):
            return self
        chosen = np.zeros(len(self.utterances), dtype=bool)
        chosen[random.Random(seed).sample(range(len(self.utterances)), max_utterances)] = True
        keep = chosen[self.enroll_index] & chosen[self.test_index]
        if not self.labels[keep].any() or self.labels[keep].all():
            raise ValueError(
                f"max_utterances={max_utterances} leaves no target or no non-target "
                f"trial of {self.source}: raise it"
            )
        return self.subset(keep)


def read_enrollment_map(path):
    """Reads an enrollment map: ``<model> <utterance> [<utterance> ...]`` per line.

    The format of CN-Celeb's ``eval/lists/enroll.map`` (and Kaldi's ``spk2utt``).

    Arguments
    ---------
    path : str or os.PathLike
        The map (gzip too).

    Returns
    -------
    dict
        Model id -> tuple of its utterances.

    Example
    -------
    >>> path = getfixture("tmp_path") / "enroll.map"
    >>> _ = path.write_text("m1 a/1.wav a/2.wav\\nm2 b/1.wav\\n")
    >>> read_enrollment_map(path)
    {'m1': ('a/1.wav', 'a/2.wav'), 'm2': ('b/1.wav',)}
    """
    models = {}
    with _open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2 or fields[0] in models:
                problem = "a repeated model" if len(fields) >= 2 else "a model with no utterance"
                raise ValueError(
                    f"{path}, line {line_number}: expected '<model> <utterance> ...', got "
                    f"{problem}: {line.rstrip()!r}"
                )
            models[fields[0]] = tuple(fields[1:])
    if not models:
        raise ValueError(f"{path}: the enrollment map is empty")
    return models


def read_trials(path, enrollment_map=None):
    """Reads a VoxCeleb-format trial list: ``<label> <enroll> <test>`` per line.

    Labels are 1 (same speaker) or 0; blank lines are skipped; the file may
    be gzip-compressed (detected from its content, e.g. ``list_test_all.txt.gz``).

    Arguments
    ---------
    path : str or os.PathLike
        The trial list.
    enrollment_map : str, os.PathLike or Mapping, optional
        Multi-utterance enrollment (see :func:`read_enrollment_map`): an id of
        the list that is a model of the map stands for the mean of its
        utterances' embeddings.

    Returns
    -------
    Trials
        Labels, enroll/test indices and the sorted distinct utterances.

    Raises
    ------
    ValueError
        For a malformed line (naming the file and the line number) or an
        empty list.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("1 a/1.wav b/1.wav\\n0 a/1.wav c/2.wav\\n")
    >>> trials = read_trials(f.name)
    >>> trials.labels.tolist(), trials.enroll_ids, len(trials.utterances)
    ([1, 0], ['a/1.wav', 'a/1.wav'], 3)
    >>> os.remove(f.name)
    """
    if enrollment_map is not None and not isinstance(enrollment_map, Mapping):
        enrollment_map = read_enrollment_map(enrollment_map)
    labels, enroll_ids, test_ids, line_numbers = [], [], [], []
    with _open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3 or fields[0] not in ("0", "1"):
                raise ValueError(
                    f"{path}, line {line_number}: expected "
                    f"'<label 0|1> <enroll> <test>', got {line.rstrip()!r}"
                )
            labels.append(fields[0] == "1")
            enroll_ids.append(fields[1])
            test_ids.append(fields[2])
            line_numbers.append(line_number)
    return Trials.from_lists(
        labels, enroll_ids, test_ids, path, line_numbers=line_numbers, enrollments=enrollment_map
    )


def write_scores(path, trials, scores):
    """Writes ``<enroll> <test> <score> <label>`` per trial.

    Scores are written with 9 significant digits (exact for float32).

    Arguments
    ---------
    path : str or os.PathLike
        Output file.
    trials : Trials
        The trial list.
    scores : array-like
        [T] scores.

    Example
    -------
    >>> import tempfile
    >>> trials = Trials.from_lists([1], ["a.wav"], ["b.wav"])
    >>> path = os.path.join(tempfile.mkdtemp(), "scores.txt")
    >>> write_scores(path, trials, [0.25])
    >>> open(path).read()
    'a.wav b.wav 0.25 1\\n'
    """
    scores = np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=np.float64)
    if scores.shape != (len(trials),):
        raise ValueError(
            f"scores has shape {scores.shape}, expected one score per trial of "
            f"{trials.source} ({len(trials)})"
        )
    utts = trials.utterances
    lines = [
        f"{utts[e]} {utts[t]} {s:.9g} {y}\n"
        for e, t, s, y in zip(
            trials.enroll_index.tolist(),
            trials.test_index.tolist(),
            scores.tolist(),
            trials.labels.tolist(),
        )
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


def read_scores(path):
    """Reads a scores file written by ``write_scores``.

    Arguments
    ---------
    path : str or os.PathLike
        The scores file (``<enroll> <test> <score> <label>`` per line).

    Returns
    -------
    trials : Trials
        The trials (labels and utterances).
    scores : numpy.ndarray
        [T] float64 scores.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "scores.txt")
    >>> write_scores(path, Trials.from_lists([0], ["a"], ["b"]), [-0.5])
    >>> trials, scores = read_scores(path)
    >>> trials.labels.tolist(), scores.tolist()
    ([0], [-0.5])
    """
    labels, enroll_ids, test_ids, scores = [], [], [], []
    with _open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 4 or fields[3] not in ("0", "1"):
                    raise ValueError
                score = float(fields[2])
            except ValueError:
                raise ValueError(
                    f"{path}, line {line_number}: expected "
                    f"'<enroll> <test> <score> <label 0|1>', got {line.rstrip()!r}"
                ) from None
            enroll_ids.append(fields[0])
            test_ids.append(fields[1])
            scores.append(score)
            labels.append(fields[3] == "1")
    trials = Trials.from_lists(labels, enroll_ids, test_ids, source=path)
    return trials, np.asarray(scores, dtype=np.float64)
