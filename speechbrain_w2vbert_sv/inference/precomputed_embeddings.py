"""Embeddings computed beforehand (``w2vbert-sv embed``), looked up by audio file.

A scoring run (``w2vbert-sv score --embeddings``, ``verify.py --embeddings``) takes the
embeddings of the files it needs from such outputs instead of embedding them again: an
embedding store folder (memory-mapped: only the rows asked for are read, so a store
larger than memory serves a cohort or a trial list), or a ``.pt``/``.npz`` file of
``embed`` (read whole). Files are matched by absolute path: a store's ids are relative
to the ``data_folder`` in its metadata (``embed`` records it), a ``.pt`` holds the
paths, and a ``.npz``'s ids are taken as paths (relative to the current folder).

Example
-------
>>> from speechbrain_w2vbert_sv.data.embedding_store import write_store
>>> folder = getfixture("tmp_path")
>>> _ = write_store(folder / "store", ["a.wav", "b.wav"], np.eye(2),
...                 meta={"data_folder": str(folder)})
>>> table = PrecomputedEmbeddings([folder / "store"])
>>> table.find([folder / "b.wav", folder / "c.wav"])
[True, False]
>>> table.rows([folder / "b.wav", folder / "a.wav"]).tolist()
[[0.0, 1.0], [1.0, 0.0]]
"""

import os

import numpy as np
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.data.embedding_store import EmbeddingStore, is_store

logger = get_logger(__name__)


def _absolute(path):
    return os.path.normpath(os.path.abspath(os.fspath(path)))


class _Store:
    """An embedding store whose ids are paths relative to its ``data_folder``."""

    def __init__(self, folder):
        self.store = EmbeddingStore.open(folder, mmap=True)
        self.root = _absolute(self.store.meta.get("data_folder") or ".")
        self.embeddings = self.store.embeddings

    def row(self, path):
        for key in (os.path.relpath(path, self.root), path):
            if key in self.store:
                return self.store.index(key)
        return None


class _InMemory:
    """A ``.pt`` (``paths``) or ``.npz`` (``ids`` taken as paths) table of ``embed``."""

    def __init__(self, path):
        path = os.fspath(path)
        try:
            if path.endswith(".npz"):
                with np.load(path, allow_pickle=False) as data:
                    names, self.embeddings = list(data["ids"]), data["embeddings"]
            else:
                data = torch.load(path, weights_only=True)
                names, self.embeddings = data["paths"], data["embeddings"].numpy()
        except (OSError, KeyError, ValueError, RuntimeError) as error:
            raise ValueError(f"{path}: not an embeddings file of `embed` ({error})") from None
        self.rows = {_absolute(name): i for i, name in enumerate(names)}

    def row(self, path):
        return self.rows.get(path)


class PrecomputedEmbeddings:
    """Embedding tables looked up by audio file (the first table holding a file wins).

    Arguments
    ---------
    sources : sequence of str or os.PathLike
        Store folders, ``.pt`` or ``.npz`` files written by ``w2vbert-sv embed``.
    """

    def __init__(self, sources):
        self.tables = []
        for source in sources:
            if is_store(source):
                self.tables.append(_Store(source))
            elif os.fspath(source).endswith((".pt", ".npz")):
                self.tables.append(_InMemory(source))
            else:
                raise ValueError(
                    f"{source}: not an embedding store folder, nor a .pt or .npz file of `embed`"
                )
        dims = {table.embeddings.shape[1] for table in self.tables}
        if len(dims) > 1:
            raise ValueError(f"the embedding tables have different sizes: {sorted(dims)}")

    def _where(self, path):
        path = _absolute(path)
        for number, table in enumerate(self.tables):
            row = table.row(path)
            if row is not None:
                return number, row
        return None

    def find(self, paths):
        """Whether each file has an embedding in the tables.

        Arguments
        ---------
        paths : sequence of str or os.PathLike
            Audio files.

        Returns
        -------
        list of bool
        """
        return [self._where(p) is not None for p in paths]

    def rows(self, paths):
        """The embeddings of files, reading only their rows (in row order: a store's
        reads go forward through its file).

        Arguments
        ---------
        paths : sequence of str or os.PathLike
            Audio files, each in a table (see ``find``).

        Returns
        -------
        torch.Tensor
            ``[len(paths), D]`` float32.
        """
        where = [self._where(p) for p in paths]
        missing = [os.fspath(p) for p, w in zip(paths, where) if w is None]
        if missing:
            raise ValueError(
                f"{len(missing)} file(s) have no precomputed embedding, e.g. {missing[0]}"
            )
        out = np.empty((len(paths), self.tables[0].embeddings.shape[1]), dtype=np.float32)
        for number, table in enumerate(self.tables):
            mine = np.asarray([i for i, w in enumerate(where) if w[0] == number], dtype=np.int64)
            if len(mine):
                rows = np.asarray([where[i][1] for i in mine], dtype=np.int64)
                order = np.argsort(rows, kind="stable")
                out[mine[order]] = table.embeddings[rows[order]]
        return torch.from_numpy(out)


def embedding_rows(paths, sources, embed):
    """Embeddings of a run's files: from precomputed tables where they hold a file,
    the others from one call of ``embed``.

    Arguments
    ---------
    paths : list of str
        Every file the run needs.
    sources : str or os.PathLike or sequence of them, optional
        Precomputed tables (see ``PrecomputedEmbeddings``); None: embed everything.
    embed : callable
        ``list of files -> [N, D] tensor`` (e.g. ``model.encode_files``); not called
        when the tables hold every file.

    Returns
    -------
    callable
        ``files -> [len(files), D]`` float32 tensor, for files among ``paths``.

    Example
    -------
    >>> rows = embedding_rows(["x", "y"], None, lambda files: torch.eye(2)[: len(files)])
    >>> rows(["y", "x"]).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    tables = PrecomputedEmbeddings(sources) if sources else None
    found = tables.find(paths) if tables else [False] * len(paths)
    missing = [p for p, here in zip(paths, found) if not here]
    if tables:
        logger.info(
            "%d of %d files have precomputed embeddings", len(paths) - len(missing), len(paths)
        )
    computed = embed(missing) if missing else None
    row = {p: i for i, p in enumerate(missing)}

    def rows(files):
        own = [i for i, p in enumerate(files) if p in row]
        if len(own) == len(files):
            return computed[torch.as_tensor([row[p] for p in files], dtype=torch.long)]
        others = [i for i, p in enumerate(files) if p not in row]
        looked_up = tables.rows([files[i] for i in others])
        out = torch.empty(len(files), looked_up.shape[1])
        out[others] = looked_up
        if own:
            out[own] = computed[torch.as_tensor([row[files[i]] for i in own], dtype=torch.long)]
        return out

    return rows
