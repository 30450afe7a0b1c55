"""Speaker identification: enrolled speakers in a store on disk, files matched against them.

A speaker store is an embedding store (:mod:`speechbrain_w2vbert_sv.data.embedding_store`)
with one row per speaker:

- the row is the direction of the speaker's mean embedding, ``mean / |mean|``, where
  ``mean`` is the mean of the L2-normalised embeddings of its enrollment files (float16 by
  default: 1 M speakers x 256 dims take 512 MB, memory-mapped on opening);
- the columns ``count`` (files enrolled) and ``norm`` (``|mean|``, float32) give back the
  sum, ``count x norm x row``, so files added to a speaker later update its mean as if all
  had been enrolled at once (up to the rounding of the stored row), without re-embedding
  any file; adding or removing a speaker rewrites the store but embeds only the new files;
- the metadata hold the model's identity (below) and the name of the model folder.

A score is the cosine of a file's embedding with a speaker's mean, so the search is one
matrix product of the normalised query with the stored rows; the best candidates are
rescored in float32 from their rows. A best score below the threshold (the model's
``hparams.threshold`` unless given) answers ``unknown``.

Model identity: the model's embedding of a fixed probe signal (2 s of a gliding harmonic
tone and seeded noise, :func:`probe_signal`) is stored at enrollment; a model used later
must embed the probe at a cosine >= ``FINGERPRINT_MIN_COSINE`` (0.99) to it. The float,
int8 and ONNX forms of one model agree to well within that, so they share a store;
another model (other weights, another training run) gives an unrelated embedding and is
refused in one line naming both models. Comparing weights' hashes would refuse the int8
form of the same model; comparing file names would accept a retrained model.

Example
-------
>>> import numpy as np
>>> folder = getfixture("tmp_path") / "speakers"
>>> rng = np.random.default_rng(0)
>>> centres = rng.standard_normal((3, 16))
>>> files = centres[[0, 0, 1, 2]] + 0.1 * rng.standard_normal((4, 16))
>>> fingerprint = rng.standard_normal(16)
>>> store = SpeakerStore.create(16, fingerprint, "toy model")
>>> store = store.updated(["ann", "ann", "bob", "eve"], files).save(folder)
>>> store = SpeakerStore.open(folder, fingerprint)
>>> store.names, store.counts.tolist()
(['ann', 'bob', 'eve'], [2, 1, 1])
>>> [(r.speaker, r.score > 0.98) for r in store.identify(centres[[2, 1]], threshold=0.5)]
[('eve', True), ('bob', True)]
>>> store.identify(-centres[:1], threshold=0.5)[0].speaker
'unknown'
"""

import os
import pathlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.embedding_store import (
    EmbeddingStore,
    EmbeddingStoreWriter,
    is_store,
)

logger = get_logger(__name__)

KIND = "speaker_store"
UNKNOWN = "unknown"
FINGERPRINT_MIN_COSINE = 0.99
PROBE_SECONDS = 2.0
PROBE_SEED = 20251207
# Rows per block of the search and of rewriting a store: 2^16 x 256 float16 = 32 MB.
BLOCK_ROWS = 1 << 16
# Candidates of the float16 search rescored in float32 beyond the top k (near ties).
EXTRA_CANDIDATES = 8
# From this many queries on, a block is converted to float32 once and multiplied with all
# of them: torch's float16 matrix-vector product costs per query, the conversion about 12
# such products (benchmarks/identification.py: fp32_blocks_ratio).
MIN_QUERIES_FP32 = 12


class IdentificationError(ValueError):
    """A store, a name or a model that identification cannot use (one line)."""


def probe_signal(sample_rate=16000):
    """The fixed signal whose embedding identifies a model.

    Two seconds of a speech-like sound: a harmonic tone whose pitch glides from 110 to
    220 Hz, modulated at a syllable rate of 4 Hz, plus seeded noise at -26 dB. It only
    needs to be the same for every form of a model and to give unrelated embeddings with
    unrelated models.

    Arguments
    ---------
    sample_rate : int
        Rate of the model.

    Returns
    -------
    torch.Tensor
        ``[samples]`` float32, peak 0.5.

    Example
    -------
    >>> wav = probe_signal()
    >>> wav.shape, float(wav.abs().max())
    (torch.Size([32000]), 0.5)
    >>> bool((probe_signal() == wav).all())
    True
    """
    t = np.arange(int(PROBE_SECONDS * sample_rate)) / sample_rate
    pitch = 110.0 * 2.0 ** (t / PROBE_SECONDS)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 20) if h * pitch.max() < sample_rate / 2)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)
    noise = np.random.default_rng(PROBE_SEED).standard_normal(len(t))
    wav = envelope * voiced + 0.05 * noise
    return torch.from_numpy(0.5 * wav / np.abs(wav).max()).float()


def model_fingerprint(model):
    """The model's normalised embedding of :func:`probe_signal` (its identity).

    Arguments
    ---------
    model : W2VBertSpeakerRecognition
        A pretrained interface (``encode_batch``, ``hparams.sample_rate``).

    Returns
    -------
    numpy.ndarray
        ``[E]`` float32 with norm 1.
    """
    with torch.no_grad():
        wav = probe_signal(model.hparams.sample_rate)[None]
        embedding = model.encode_batch(wav, torch.ones(1)).reshape(-1).float().cpu().numpy()
    return embedding / np.linalg.norm(embedding)


def check_speaker_name(name):
    """Refuses a speaker name that a list or an answer could not carry.

    Arguments
    ---------
    name : str
        A speaker name: no spaces (lists are ``<speaker> <path>``), not ``unknown``.

    Example
    -------
    >>> check_speaker_name("id10001")
    >>> check_speaker_name("Ann Lee")
    Traceback (most recent call last):
    ...
    speechbrain_w2vbert_sv.applications.identification.IdentificationError: speaker name ...
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise IdentificationError(f"speaker name {name!r}: names have no spaces")
    if name == UNKNOWN:
        raise IdentificationError(f"{UNKNOWN!r} is the answer for no match, not a speaker name")


def _normalise(embeddings):
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


class _EditedRows:
    """The rows of a store after removals, replacements and additions, read from the
    original rows only when indexed (a 1 M-speaker store is never copied whole).

    Arguments
    ---------
    source : array-like
        ``[N, D]`` original rows (a memmap, or another ``_EditedRows``).
    keep : numpy.ndarray
        Source rows kept, in order: the first ``len(keep)`` rows.
    replaced : dict, optional
        Row index (among the kept rows) -> replacement vector.
    appended : numpy.ndarray, optional
        ``[M, D]`` rows after the kept ones.
    """

    def __init__(self, source, keep, replaced=None, appended=None):
        self.source = source
        self.keep = keep
        replaced = replaced or {}
        self.replaced_rows = np.asarray(sorted(replaced), dtype=np.int64)
        self.replaced_vectors = np.asarray([replaced[r] for r in self.replaced_rows])
        dim = source.shape[1]
        self.appended = np.zeros((0, dim)) if appended is None else np.asarray(appended)
        self.shape = (len(keep) + len(self.appended), dim)
        self.dtype = source.dtype

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        rows = np.arange(self.shape[0])[index]
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        kept = rows < len(self.keep)
        out[kept] = self.source[self.keep[rows[kept]]]
        out[~kept] = self.appended[rows[~kept] - len(self.keep)]
        if len(self.replaced_rows):
            where = np.searchsorted(self.replaced_rows, rows)
            where = np.minimum(where, len(self.replaced_rows) - 1)
            hit = self.replaced_rows[where] == rows
            out[hit] = self.replaced_vectors[where[hit]]
        return out


def _as_tensor(array):
    # A read-only memmap becomes a tensor without a copy; torch warns that it is not
    # writable, and it is never written.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(array))


def top_k_inner_products(table, queries, k, block_rows=BLOCK_ROWS):
    """The ``k`` largest inner products of each query with the rows of a table.

    The table is read block by block (a memmap is read once, whatever the number of
    queries). A float16 block is multiplied in float16 (torch's CPU kernel reads the
    half-size rows; bandwidth bounds this search) for fewer than ``MIN_QUERIES_FP32``
    queries, one matrix-vector product each, else converted to float32 once for one
    matrix product with all queries.

    Arguments
    ---------
    table : array-like
        ``[N, D]`` float16 or float32 rows.
    queries : array-like
        ``[Q, D]`` float32.
    k : int
        Results per query (at most ``N``).
    block_rows : int
        Rows per block.

    Returns
    -------
    scores : numpy.ndarray
        ``[Q, k]`` float32, largest first.
    rows : numpy.ndarray
        ``[Q, k]`` int64 row indices.

    Example
    -------
    >>> table = np.eye(4, dtype=np.float16)
    >>> scores, rows = top_k_inner_products(table, np.array([[0.1, 0.9, 0.3, 0.0]]), 2, 3)
    >>> rows.tolist(), [round(score, 2) for score in scores[0].tolist()]
    ([[1, 2]], [0.9, 0.3])
    """
    queries = torch.as_tensor(np.asarray(queries, dtype=np.float32))
    k = min(k, len(table))
    best_scores = torch.empty(len(queries), 0)
    best_rows = torch.empty(len(queries), 0, dtype=torch.int64)
    for start in range(0, len(table), block_rows):
        block = _as_tensor(table[start : start + block_rows])
        if block.dtype == torch.float16 and len(queries) < MIN_QUERIES_FP32:
            half = queries.half()
            scores = torch.stack([torch.mv(block, q) for q in half]).float()
        else:
            scores = queries @ block.float().T
        scores = torch.cat([best_scores, scores], 1)
        rows = torch.arange(start, start + len(block)).expand(len(queries), -1)
        rows = torch.cat([best_rows, rows], 1)
        best_scores, picked = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        best_rows = torch.gather(rows, 1, picked)
    return best_scores.numpy(), best_rows.numpy()


@dataclass(frozen=True)
class Identification:
    """The answer for one file.

    Attributes
    ----------
    speaker : str
        The best speaker, or ``unknown`` when its score is below the threshold.
    score : float
        The best cosine score.
    candidates : list of (str, float)
        The top-k speakers and scores, best first.
    """

    speaker: str
    score: float
    candidates: list


class SpeakerStore:
    """Enrolled speakers: names, mean directions, norms and counts, and the model identity.

    Build one with ``create`` or ``open``; ``updated`` and ``removed`` return the new
    contents (nothing is written until ``save``, which replaces the folder atomically).

    Arguments
    ---------
    names : list of str
        Speaker names, one per row.
    rows : numpy.ndarray
        ``[N, D]`` normalised mean embeddings (possibly memory-mapped).
    norms : numpy.ndarray
        ``[N]`` norms of the means.
    counts : numpy.ndarray
        ``[N]`` number of enrolled files.
    fingerprint : numpy.ndarray
        ``[D]`` the model's probe embedding.
    model_name : str
        Name of the model, for messages.
    dtype : str
        ``float16`` or ``float32``: how the rows are stored.
    folder : pathlib.Path, optional
        Where the store was read.
    """

    def __init__(self, names, rows, norms, counts, fingerprint, model_name, dtype, folder=None):
        self.names = names
        self.rows = rows
        self.norms = norms
        self.counts = counts
        self.fingerprint = np.asarray(fingerprint, dtype=np.float32)
        self.model_name = model_name
        self.dtype = dtype
        self.folder = folder
        self._index = None

    @classmethod
    def create(cls, dim, fingerprint, model_name, dtype="float16"):
        """An empty store for a model.

        Arguments
        ---------
        dim : int
            Embedding size.
        fingerprint : array-like
            The model's probe embedding (``model_fingerprint``).
        model_name : str
            Name of the model, for messages.
        dtype : str
            ``float16`` (half the size) or ``float32`` rows.

        Returns
        -------
        SpeakerStore
        """
        fingerprint = _normalise(fingerprint).astype(np.float32)
        if fingerprint.shape != (dim,):
            raise IdentificationError(f"fingerprint of size {fingerprint.shape}, not [{dim}]")
        empty = np.zeros((0, dim), dtype=dtype)
        counts = np.zeros(0, dtype=np.int64)
        return cls([], empty, np.zeros(0, np.float32), counts, fingerprint, model_name, dtype)

    @classmethod
    def open(cls, folder, fingerprint=None, model_name="this model", mmap=True):
        """Opens a store, checking that it was enrolled with the model of ``fingerprint``.

        Arguments
        ---------
        folder : str or os.PathLike
            The store.
        fingerprint : array-like, optional
            The probe embedding of the model about to use it (None: not checked).
        model_name : str
            Name of that model, for the message.
        mmap : bool
            Map the rows (read on access) rather than reading them.

        Returns
        -------
        SpeakerStore

        Raises
        ------
        IdentificationError
            Not a speaker store, or one of another model.
        """
        table = EmbeddingStore.open(folder, mmap=mmap)
        meta = table.meta
        if meta.get("kind") != KIND or set(table.columns) != {"count", "norm"}:
            raise IdentificationError(f"{folder}: an embedding store, but not a speaker store")
        store = cls(
            list(table.ids),
            table.embeddings,
            table.columns["norm"],
            table.columns["count"],
            np.asarray(meta["fingerprint"], dtype=np.float32),
            meta.get("model_name", "?"),
            table.embeddings.dtype.name,
            pathlib.Path(folder),
        )
        if fingerprint is not None:
            store.check_model(fingerprint, model_name)
        return store

    def check_model(self, fingerprint, model_name="this model"):
        """Refuses a model whose probe embedding differs from the enrolled model's.

        Arguments
        ---------
        fingerprint : array-like
            The probe embedding of the model about to use the store.
        model_name : str
            Name of that model, for the message.

        Raises
        ------
        IdentificationError
            Naming both models and the cosine.
        """
        fingerprint = np.asarray(fingerprint, dtype=np.float64).reshape(-1)
        where = self.folder or "the speaker store"
        if fingerprint.shape != self.fingerprint.shape:
            raise IdentificationError(
                f"{where} was enrolled with model {self.model_name!r} "
                f"({len(self.fingerprint)}-dim embeddings); {model_name!r} gives "
                f"{len(fingerprint)}-dim: use that model, or enroll again into a new store"
            )
        cosine = float(_normalise(fingerprint) @ self.fingerprint)
        if cosine < FINGERPRINT_MIN_COSINE:
            raise IdentificationError(
                f"{where} was enrolled with model {self.model_name!r}, not {model_name!r} "
                f"(their embeddings of the identity probe have cosine {cosine:.3f} < "
                f"{FINGERPRINT_MIN_COSINE}): use that model, or enroll again into a new store"
            )

    def __len__(self):
        return len(self.names)

    def __contains__(self, name):
        return name in self._rows_of()

    def _rows_of(self):
        if self._index is None:
            self._index = {name: row for row, name in enumerate(self.names)}
        return self._index

    def means(self, names):
        """The mean of normalised enrollment embeddings of speakers.

        Arguments
        ---------
        names : sequence of str
            Enrolled speakers.

        Returns
        -------
        numpy.ndarray
            ``[len(names), D]`` float64 (``norm x row``).
        """
        rows = np.asarray([self._rows_of()[n] for n in names], dtype=np.int64)
        if not len(rows):
            return np.zeros((0, self.rows.shape[1]))
        return np.asarray(self.rows[rows], dtype=np.float64) * self.norms[rows, None]

    def removed(self, names):
        """The store without some speakers (nobody is re-embedded).

        Arguments
        ---------
        names : sequence of str
            Enrolled speakers.

        Returns
        -------
        SpeakerStore

        Raises
        ------
        IdentificationError
            A name that is not enrolled.
        """
        gone = set(names)
        for name in names:
            if name not in self:
                raise IdentificationError(
                    f"cannot remove {name!r}: not in {self.folder or 'the speaker store'} "
                    f"({len(self)} speakers)"
                )
        keep = np.asarray([i for i, n in enumerate(self.names) if n not in gone], np.int64)
        return self._with_rows(
            [self.names[i] for i in keep],
            _EditedRows(self.rows, keep),
            np.asarray(self.norms)[keep],
            np.asarray(self.counts)[keep],
        )

    def updated(self, speakers, embeddings):
        """The store with files added: each speaker's mean takes its new files in.

        A speaker already enrolled keeps its files and gets the new ones (a note says
        so); a new speaker gets a row. Only the given embeddings are used.

        Arguments
        ---------
        speakers : sequence of str
            The speaker of each embedding (no spaces; not ``unknown``).
        embeddings : array-like
            ``[len(speakers), D]`` embeddings (normalised here).

        Returns
        -------
        SpeakerStore
        """
        embeddings = _normalise(embeddings)
        if embeddings.ndim != 2 or len(embeddings) != len(speakers):
            raise IdentificationError(
                f"{len(speakers)} speakers for embeddings of shape {list(embeddings.shape)}"
            )
        if embeddings.shape[1] != self.rows.shape[1]:
            raise IdentificationError(
                f"embeddings of size {embeddings.shape[1]} for a store of size {self.rows.shape[1]}"
            )
        for name in speakers:
            check_speaker_name(name)
        order = list(dict.fromkeys(speakers))
        position = {name: i for i, name in enumerate(order)}
        owner = [position[s] for s in speakers]
        sums = np.zeros((len(order), embeddings.shape[1]))
        np.add.at(sums, owner, embeddings)
        totals = np.bincount(owner, minlength=len(order)).astype(np.int64)
        rows_of = self._rows_of()
        old = np.asarray([i for i, n in enumerate(order) if n in rows_of], np.int64)
        new = np.asarray([i for i, n in enumerate(order) if n not in rows_of], np.int64)
        store_rows = np.asarray([rows_of[order[i]] for i in old], np.int64)
        counts = np.array(self.counts, dtype=np.int64)
        for i, row in zip(old, store_rows):
            logger.warning(
                "speaker %r is already enrolled (%d files): %d more files added to its mean",
                order[i],
                counts[row],
                totals[i],
            )
        if len(old):
            # The sum of the enrolled files' normalised embeddings is count x mean.
            sums[old] += self.means([order[i] for i in old]) * counts[store_rows, None]
            totals[old] += counts[store_rows]
        means = sums / totals[:, None]
        norms = np.linalg.norm(means, axis=1)
        directions = means / np.maximum(norms, 1e-12)[:, None]
        all_norms = np.array(self.norms, dtype=np.float64)
        all_norms[store_rows] = norms[old]
        counts[store_rows] = totals[old]
        rows = _EditedRows(
            self.rows,
            np.arange(len(self), dtype=np.int64),
            dict(zip(store_rows.tolist(), directions[old])),
            directions[new],
        )
        return self._with_rows(
            self.names + [order[i] for i in new],
            rows,
            np.concatenate([all_norms, norms[new]]),
            np.concatenate([counts, totals[new]]),
        )

    def _with_rows(self, names, rows, norms, counts):
        return SpeakerStore(
            names,
            rows,
            norms.astype(np.float32),
            counts.astype(np.int64),
            self.fingerprint,
            self.model_name,
            self.dtype,
            self.folder,
        )

    def save(self, folder):
        """Writes the store, replacing the folder atomically (a kill keeps the old one).

        Arguments
        ---------
        folder : str or os.PathLike
            Where to write.

        Returns
        -------
        SpeakerStore
            The written store, opened memory-mapped.
        """
        meta = {
            "kind": KIND,
            "model_name": self.model_name,
            "fingerprint": [float(x) for x in self.fingerprint],
        }
        count, dim = len(self.names), self.rows.shape[1]
        columns = {"count": "int64", "norm": "float32"}
        with EmbeddingStoreWriter(folder, count, dim, self.dtype, meta, columns) as writer:
            for start in range(0, count, BLOCK_ROWS):
                stop = min(start + BLOCK_ROWS, count)
                writer.write(
                    start,
                    self.names[start:stop],
                    self.rows[start:stop],
                    {"count": self.counts[start:stop], "norm": self.norms[start:stop]},
                )
        return SpeakerStore.open(folder)

    def search(self, queries, top_k=1):
        """The ``top_k`` speakers of highest cosine for each query.

        Arguments
        ---------
        queries : array-like
            ``[Q, D]`` embeddings.
        top_k : int
            Candidates per query (at most the number of speakers).

        Returns
        -------
        scores : numpy.ndarray
            ``[Q, k]`` float32 cosines, best first.
        rows : numpy.ndarray
            ``[Q, k]`` int64 rows of the speakers.
        """
        if not len(self.names):
            raise IdentificationError(f"{self.folder or 'the speaker store'} has no speakers")
        queries = _normalise(np.atleast_2d(queries)).astype(np.float32)
        k = min(top_k, len(self.names))
        _, rows = top_k_inner_products(self.rows, queries, k + EXTRA_CANDIDATES)
        # The float16 products are rounded to about 1e-3: rescore the candidates in
        # float32 (their rows normalised again after rounding) and rank them again.
        candidates = _normalise(self.rows[rows.reshape(-1)]).astype(np.float32)
        exact = np.einsum("qkd,qd->qk", candidates.reshape(*rows.shape, -1), queries)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, 1), np.take_along_axis(rows, order, 1)

    def identify(self, queries, top_k=1, threshold=0.0):
        """The best speaker of each query, or ``unknown`` below the threshold.

        Arguments
        ---------
        queries : array-like
            ``[Q, D]`` embeddings.
        top_k : int
            Candidates listed per query.
        threshold : float
            Lowest cosine for a speaker to be named.

        Returns
        -------
        list of Identification
        """
        scores, rows = self.search(queries, top_k)
        results = []
        for score_row, index_row in zip(scores.tolist(), rows.tolist()):
            candidates = [(self.names[r], s) for r, s in zip(index_row, score_row)]
            best, score = candidates[0]
            speaker = best if score >= threshold else UNKNOWN
            results.append(Identification(speaker, score, candidates))
        return results


def read_enrollment_list(path):
    """The speakers and files of an enrollment list.

    One ``<speaker> <audio path>`` per line: the speaker is the first word, the path the
    rest of the line (it may hold spaces). A relative path is relative to the list's
    folder, so a list travels with its audio. Blank lines and lines starting with ``#``
    are skipped.

    Arguments
    ---------
    path : str or os.PathLike
        The list.

    Returns
    -------
    speakers : list of str
    paths : list of str

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> text = "# speaker file\\nann a/1.wav\\nbob /data/b 2.wav\\n"
    >>> _ = (folder / "enroll.txt").write_text(text)
    >>> speakers, paths = read_enrollment_list(folder / "enroll.txt")
    >>> speakers, paths[0] == str(folder / "a" / "1.wav"), paths[1]
    (['ann', 'bob'], True, '/data/b 2.wav')
    """
    path = pathlib.Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise IdentificationError(f"enrollment list {path}: unreadable ({error})") from None
    speakers, paths = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.strip().split(maxsplit=1)
        if len(fields) != 2:
            raise IdentificationError(
                f"{path}, line {number}: expected '<speaker> <audio path>', got {line!r}"
            )
        speakers.append(fields[0])
        paths.append(str(path.parent / fields[1]))
    if not speakers:
        raise IdentificationError(f"enrollment list {path} names no files")
    return speakers, paths


def _open_or_create(folder, fingerprint, model_name, dtype):
    if is_store(folder):
        return SpeakerStore.open(folder, fingerprint, model_name)
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        # A store write replaces the folder: never over something else.
        raise IdentificationError(f"{folder}: exists and is not a speaker store")
    return SpeakerStore.create(len(fingerprint), fingerprint, model_name, dtype)


def enroll(
    model,
    store,
    speakers=(),
    paths=(),
    remove=(),
    model_name="the given model",
    dtype="float16",
    **embed_options,
):
    """Builds or changes a speaker store: removes speakers, then adds files.

    Removals come first, so removing a speaker and listing its files enrolls it afresh.
    Only the listed files are embedded; the store is rewritten once, atomically.

    Arguments
    ---------
    model : W2VBertSpeakerRecognition
        The model (any form: exported, int8, ONNX, imported).
    store : str or os.PathLike
        The store folder (created if absent).
    speakers : sequence of str
        The speaker of each file.
    paths : sequence of str
        Audio files.
    remove : sequence of str
        Speakers to remove (each must be enrolled).
    model_name : str
        The model's name, kept in a new store and used in messages.
    dtype : str
        Rows of a new store: ``float16`` or ``float32``.
    **embed_options
        Options of ``encode_files`` (``batch_seconds``, ``progress``, ...).

    Returns
    -------
    SpeakerStore
        The written store.
    """
    if len(speakers) != len(paths):
        raise IdentificationError(f"{len(speakers)} speakers for {len(paths)} files")
    if not paths and not remove:
        raise IdentificationError("nothing to do: give files to enroll or speakers to remove")
    for name in speakers:
        check_speaker_name(name)
    fingerprint = model_fingerprint(model)
    current = _open_or_create(store, fingerprint, model_name, dtype)
    if remove:
        current = current.removed(list(remove))
    if paths:
        embeddings = model.encode_files(list(paths), **embed_options)
        current = current.updated(list(speakers), embeddings.numpy())
    return current.save(store)


def identify(
    model, store, paths, top_k=1, threshold=None, model_name="the given model", **embed_options
):
    """The enrolled speaker of each file, or ``unknown``.

    Arguments
    ---------
    model : W2VBertSpeakerRecognition
        A form of the model that enrolled the store.
    store : str or os.PathLike
        The store folder.
    paths : sequence of str
        Audio files.
    top_k : int
        Candidates listed per file.
    threshold : float, optional
        Lowest score that names a speaker (default: the model's ``hparams.threshold``).
    model_name : str
        The model's name, for messages.
    **embed_options
        Options of ``encode_files``.

    Returns
    -------
    list of Identification
        One per file, in order.
    """
    if top_k < 1:
        raise IdentificationError(f"top_k must be at least 1, got {top_k}")
    speakers = SpeakerStore.open(store, model_fingerprint(model), model_name)
    if not len(speakers):
        raise IdentificationError(f"{store} has no speakers")
    threshold = model.hparams.threshold if threshold is None else threshold
    embeddings = model.encode_files(list(paths), **embed_options)
    return speakers.identify(embeddings.numpy(), top_k, threshold)
