"""A folder of named embeddings too large for memory, read memory-mapped.

Layout of a store folder:

- ``ids.txt``: one id per line, UTF-8, in row order. An id is the whole line: it may hold
  spaces, but no line break, and it is not empty; ids are unique.
- ``embeddings.npy``: ``[N, D]`` float32 or float16 in NumPy's ``.npy`` format, so
  ``np.load(path, mmap_mode="r")`` maps it instead of reading it.
- ``<name>.npy`` for each named column: ``[N]`` per-row values (e.g. counts).
- ``meta.json``: ``{"format", "version", "dtype", "count", "dim", "columns", "meta"}``;
  ``meta`` is free-form (e.g. the identity of the model that made the embeddings).

Writing is atomic at the folder level. ``EmbeddingStoreWriter`` fills a sibling folder
``.<name>.writing``; ``close()`` checks that every row was written, flushes the files to
disk, then (1) renames the current store, if any, to ``.<name>.old``, (2) renames the new
folder to ``<name>``, (3) deletes ``.<name>.old``. A kill before (2) leaves the previous
store (at ``<name>``, or only at ``.<name>.old`` after (1): readers then read it there); a
kill after (2) leaves the new one. Readers never rename: the next writer of the folder
finishes the recovery (puts a lone ``.old`` back, deletes a stale ``.old`` or
``.writing``).

Example
-------
>>> import numpy as np
>>> folder = getfixture("tmp_path") / "table"
>>> table = np.arange(6, dtype=np.float32).reshape(3, 2)
>>> _ = write_store(folder, ["a", "b c", "d"], table, meta={"model": "toy"})
>>> store = EmbeddingStore.open(folder)
>>> len(store), store.meta, isinstance(store.embeddings, np.memmap)
(3, {'model': 'toy'}, True)
>>> store.get(["d", "b c"])
array([[4., 5.],
       [2., 3.]], dtype=float32)
>>> store.index(["x"])
Traceback (most recent call last):
...
speechbrain_w2vbert_sv.data.embedding_store.EmbeddingStoreError: id 'x' is not in the store ...
"""

import json
import os
import pathlib
import shutil

import numpy as np

from speechbrain_w2vbert_sv.utils import fsync_path

FORMAT = "speechbrain_w2vbert_sv.embedding_store"
VERSION = 1
DTYPES = ("float32", "float16")
WRITING_SUFFIX = ".writing"
OLD_SUFFIX = ".old"


class EmbeddingStoreError(ValueError):
    """A folder that is not a usable store, or an id that is not in it (one line)."""


def _sibling(folder, suffix):
    folder = pathlib.Path(folder)
    return folder.parent / f".{folder.name}{suffix}"


def _readable_folder(folder):
    """The folder that holds the store's current version: ``folder``, or its ``.old``
    sibling after a writer was killed between its two renames."""
    folder = pathlib.Path(folder)
    old = _sibling(folder, OLD_SUFFIX)
    if not folder.exists() and old.is_dir():
        return old
    return folder


def is_store(folder):
    """Whether ``folder`` (or its ``.old`` sibling after a killed write) holds a store.

    Arguments
    ---------
    folder : str or os.PathLike
        A path.

    Returns
    -------
    bool
        True if its ``meta.json`` names this format (the rest is checked on opening).

    Example
    -------
    >>> is_store(getfixture("tmp_path"))
    False
    """
    meta = _readable_folder(folder) / "meta.json"
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_ids(ids, folder):
    for item in ids:
        if not isinstance(item, str) or not item or "\n" in item or "\r" in item:
            raise EmbeddingStoreError(
                f"{folder}: id {item!r} cannot be stored (ids are non-empty strings "
                "without line breaks)"
            )


class EmbeddingStore:
    """An opened store: ids, the memory-mapped embeddings, per-row columns, metadata.

    Use ``EmbeddingStore.open``.

    Arguments
    ---------
    folder : pathlib.Path
        Where the store was read.
    ids : list of str
        Row ids.
    embeddings : numpy.ndarray
        ``[N, D]`` (a ``np.memmap`` when opened with ``mmap=True``).
    columns : dict
        Name -> ``[N]`` array.
    meta : dict
        Free-form metadata.
    """

    def __init__(self, folder, ids, embeddings, columns, meta):
        self.folder = folder
        self.ids = ids
        self.embeddings = embeddings
        self.columns = columns
        self.meta = meta
        self._rows = None

    @classmethod
    def open(cls, folder, mmap=True):
        """Opens a store folder.

        Arguments
        ---------
        folder : str or os.PathLike
            A store written by ``EmbeddingStoreWriter`` or ``write_store``.
        mmap : bool
            Map the arrays (read on access) instead of reading them into memory.

        Returns
        -------
        EmbeddingStore

        Raises
        ------
        EmbeddingStoreError
            The folder is not a store, or its files disagree (one line).
        """
        requested = pathlib.Path(folder)
        folder = _readable_folder(requested)
        if not folder.is_dir():
            problem = "not a folder" if folder.exists() else "no such folder"
            raise EmbeddingStoreError(f"{requested}: no embedding store there ({problem})")
        try:
            header = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EmbeddingStoreError(
                f"{requested}: not an embedding store (no meta.json)"
            ) from None
        except (OSError, ValueError) as error:
            raise EmbeddingStoreError(f"{requested}: unreadable meta.json ({error})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise EmbeddingStoreError(
                f"{requested}: meta.json does not describe an embedding store"
            )
        if header.get("version", 0) > VERSION:
            raise EmbeddingStoreError(
                f"{requested}: store version {header['version']} is newer than this "
                f"package reads ({VERSION}); upgrade speechbrain-w2vbert-sv"
            )
        count, dim = header.get("count"), header.get("dim")
        ids_file = folder / "ids.txt"
        try:
            text = ids_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise EmbeddingStoreError(f"{requested}: not an embedding store (no ids.txt)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise EmbeddingStoreError(f"{ids_file}: unreadable ({error})") from None
        ids = text.split("\n")[:-1] if text else []
        if len(ids) != count:
            raise EmbeddingStoreError(
                f"{ids_file}: {len(ids)} ids, but meta.json counts {count} rows"
            )

        def load(name, shape):
            path = folder / f"{name}.npy"
            try:
                array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
            except FileNotFoundError:
                raise EmbeddingStoreError(
                    f"{requested}: not an embedding store (no {name}.npy)"
                ) from None
            except (OSError, ValueError) as error:
                raise EmbeddingStoreError(f"{path}: unreadable ({error})") from None
            if array.shape != shape:
                raise EmbeddingStoreError(
                    f"{path}: shape {list(array.shape)}, but meta.json says {list(shape)}"
                )
            return array

        embeddings = load("embeddings", (count, dim))
        if embeddings.dtype.name != header.get("dtype"):
            raise EmbeddingStoreError(
                f"{folder / 'embeddings.npy'}: dtype {embeddings.dtype.name}, but meta.json "
                f"says {header.get('dtype')}"
            )
        columns = {name: load(name, (count,)) for name in header.get("columns", {})}
        return cls(requested, ids, embeddings, columns, header.get("meta") or {})

    def __len__(self):
        return len(self.ids)

    @property
    def dim(self):
        """Embedding size."""
        return self.embeddings.shape[1]

    def index(self, ids):
        """Row indices of ids.

        Arguments
        ---------
        ids : str or sequence of str
            One id, or several.

        Returns
        -------
        int or numpy.ndarray
            The row of one id, or the int64 rows of several.

        Raises
        ------
        EmbeddingStoreError
            An id is not in the store (naming it and the folder).
        """
        if self._rows is None:
            self._rows = {item: row for row, item in enumerate(self.ids)}
        single = isinstance(ids, str)
        rows = []
        for item in [ids] if single else ids:
            if item not in self._rows:
                raise EmbeddingStoreError(f"id {item!r} is not in the store {self.folder}")
            rows.append(self._rows[item])
        return rows[0] if single else np.asarray(rows, dtype=np.int64)

    def __contains__(self, item):
        if self._rows is None:
            self.index([])
        return item in self._rows

    def get(self, ids):
        """Embeddings of ids as float32, reading only their rows.

        Arguments
        ---------
        ids : str or sequence of str
            One id (returns ``[D]``) or several (returns ``[len(ids), D]``).

        Returns
        -------
        numpy.ndarray
            float32 embeddings.
        """
        return np.asarray(self.embeddings[self.index(ids)], dtype=np.float32)


def recover(folder):
    """Finishes or undoes a replacement that a kill interrupted.

    A lone ``.<name>.old`` (killed between the two renames) is renamed back; an ``.old``
    beside a store (killed before its deletion) and a ``.writing`` folder (killed while
    writing) are deleted.

    Arguments
    ---------
    folder : str or os.PathLike
        The store's path.

    Example
    -------
    >>> folder = getfixture("tmp_path") / "table"
    >>> _ = write_store(folder, ["a"], np.ones((1, 2)))
    >>> os.rename(folder, _sibling(folder, OLD_SUFFIX))  # as a kill after step (1)
    >>> recover(folder)
    >>> EmbeddingStore.open(folder).ids
    ['a']
    """
    folder = pathlib.Path(folder)
    old, writing = _sibling(folder, OLD_SUFFIX), _sibling(folder, WRITING_SUFFIX)
    if old.exists():
        if folder.exists():
            shutil.rmtree(old)
        else:
            os.rename(old, folder)
    if writing.exists():
        shutil.rmtree(writing)


class EmbeddingStoreWriter:
    """Writes a store of ``count`` rows, in any order of row blocks, then swaps it in.

    Arguments
    ---------
    folder : str or os.PathLike
        The store to create or replace (its parent is created).
    count : int
        Number of rows.
    dim : int
        Embedding size.
    dtype : str
        ``float32`` or ``float16`` (the rows are converted on writing).
    meta : dict, optional
        Free-form JSON-serialisable metadata.
    columns : dict, optional
        Name -> NumPy dtype of per-row columns (e.g. ``{"count": "int64"}``).

    Example
    -------
    >>> folder = getfixture("tmp_path") / "table"
    >>> with EmbeddingStoreWriter(folder, count=3, dim=2, dtype="float16") as writer:
    ...     writer.write(1, ["b", "c"], np.ones((2, 2)))
    ...     writer.write(0, ["a"], np.zeros((1, 2)))
    >>> EmbeddingStore.open(folder).embeddings.dtype
    dtype('float16')
    >>> with EmbeddingStoreWriter(folder, count=2, dim=2) as writer:
    ...     writer.write(0, ["a"], np.zeros((1, 2)))
    Traceback (most recent call last):
    ...
    speechbrain_w2vbert_sv.data.embedding_store.EmbeddingStoreError: ...: rows [1] were not written
    >>> EmbeddingStore.open(folder).ids  # the previous store is left as it was
    ['a', 'b', 'c']
    """

    def __init__(self, folder, count, dim, dtype="float32", meta=None, columns=None):
        if dtype not in DTYPES:
            raise EmbeddingStoreError(f"{folder}: dtype must be one of {DTYPES}, got {dtype!r}")
        if count < 0 or dim < 1:
            raise EmbeddingStoreError(f"{folder}: need count >= 0 and dim >= 1, got {count}, {dim}")
        self.folder = pathlib.Path(folder)
        self.count, self.dim, self.dtype = int(count), int(dim), dtype
        self.header = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": dtype,
            "count": self.count,
            "dim": self.dim,
            "columns": {name: np.dtype(kind).name for name, kind in (columns or {}).items()},
            "meta": meta or {},
        }
        json.dumps(self.header)  # a meta that JSON cannot hold fails now, not at close
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        recover(self.folder)
        self.tmp = _sibling(self.folder, WRITING_SUFFIX)
        self.tmp.mkdir()
        self.ids = [None] * self.count
        self.written = np.zeros(self.count, dtype=bool)
        self.embeddings = np.lib.format.open_memmap(
            self.tmp / "embeddings.npy", mode="w+", dtype=dtype, shape=(self.count, self.dim)
        )
        self.columns = {
            name: np.lib.format.open_memmap(
                self.tmp / f"{name}.npy", mode="w+", dtype=kind, shape=(self.count,)
            )
            for name, kind in self.header["columns"].items()
        }
        self.closed = False

    def write(self, start_row, ids, array, columns=None):
        """Fills rows ``start_row .. start_row + len(ids) - 1``.

        Arguments
        ---------
        start_row : int
            First row.
        ids : sequence of str
            Their ids.
        array : array-like
            ``[len(ids), dim]`` embeddings (a torch tensor too).
        columns : dict, optional
            Name -> ``[len(ids)]`` values of every declared column.
        """
        array = np.asarray(array)
        ids = list(ids)
        _check_ids(ids, self.folder)
        stop = start_row + len(ids)
        if array.shape != (len(ids), self.dim) or not 0 <= start_row <= stop <= self.count:
            raise EmbeddingStoreError(
                f"{self.folder}: rows {start_row}..{stop - 1} of shape {list(array.shape)} do "
                f"not fit a store of {self.count} rows of size {self.dim}"
            )
        columns = columns or {}
        if set(columns) != set(self.columns):
            raise EmbeddingStoreError(
                f"{self.folder}: columns {sorted(columns)} given, {sorted(self.columns)} declared"
            )
        self.embeddings[start_row:stop] = array
        for name, values in columns.items():
            self.columns[name][start_row:stop] = np.asarray(values)
        self.ids[start_row:stop] = ids
        self.written[start_row:stop] = True

    def close(self):
        """Checks that every row was written, then replaces the store (see the module)."""
        if self.closed:
            return
        missing = np.flatnonzero(~self.written)
        if len(missing):
            self.abort()
            shown = ", ".join(str(r) for r in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise EmbeddingStoreError(f"{self.folder}: rows [{shown}] were not written")
        if len(set(self.ids)) != len(self.ids):
            self.abort()
            seen = set()
            duplicate = next(i for i in self.ids if i in seen or seen.add(i))
            raise EmbeddingStoreError(f"{self.folder}: id {duplicate!r} is given twice")
        for array in [self.embeddings, *self.columns.values()]:
            array.flush()
        del self.embeddings, self.columns  # closes the maps before the renames
        (self.tmp / "ids.txt").write_text(
            "".join(f"{i}\n" for i in self.ids), encoding="utf-8", newline="\n"
        )
        (self.tmp / "meta.json").write_text(json.dumps(self.header, indent=1), encoding="utf-8")
        for path in self.tmp.iterdir():
            fsync_path(path)
        old = _sibling(self.folder, OLD_SUFFIX)
        if self.folder.exists():
            os.rename(self.folder, old)
        os.rename(self.tmp, self.folder)
        if old.exists():
            shutil.rmtree(old)
        self.closed = True

    def abort(self):
        """Drops what was written; the previous store stays."""
        self.closed = True
        self.embeddings = self.columns = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.close()
        else:
            self.abort()


def write_store(folder, ids, embeddings, meta=None, dtype="float32", columns=None):
    """Writes an in-memory table as a store (atomically replacing one there).

    Arguments
    ---------
    folder : str or os.PathLike
        The store folder.
    ids : sequence of str
        Row ids.
    embeddings : array-like
        ``[len(ids), D]`` (a torch tensor too).
    meta : dict, optional
        Free-form JSON-serialisable metadata.
    dtype : str
        ``float32`` or ``float16``.
    columns : dict, optional
        Name -> ``[len(ids)]`` per-row values.

    Returns
    -------
    pathlib.Path
        The folder.
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or len(embeddings) != len(ids):
        raise EmbeddingStoreError(
            f"{folder}: {len(ids)} ids for embeddings of shape {list(embeddings.shape)}"
        )
    columns = {name: np.asarray(values) for name, values in (columns or {}).items()}
    kinds = {name: values.dtype for name, values in columns.items()}
    with EmbeddingStoreWriter(folder, len(ids), embeddings.shape[1], dtype, meta, kinds) as writer:
        writer.write(0, ids, embeddings, columns)
    return pathlib.Path(folder)
