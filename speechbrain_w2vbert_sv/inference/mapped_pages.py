"""Keeping a memory-mapped checkpoint out of the resident memory while it is copied.

``torch.load(mmap=True)`` maps the file: nothing is read up front, but every page that
is touched (writing the weights to another file touches them all) counts in the
process's resident memory until it is unmapped. An import that writes a 2.35 GB model
would so hold the whole file on top of the interpreter. Dropping the pages of a private
mapping that nothing wrote to (``madvise(MADV_DONTNEED)``) loses nothing: a later access
reads them again from the file (the page cache). Python exposes ``madvise`` only for its
own ``mmap`` objects, hence ``ctypes``. Linux only; elsewhere nothing is released.
"""

import contextlib
import ctypes
import os
import pathlib
import threading

_MADV_DONTNEED = 4
_MAPS = pathlib.Path("/proc/self/smaps")


def _clean_mappings(path):
    """``(start, end)`` of this process's private mappings of ``path`` without written
    (copy-on-write) pages: dropping those would lose the writes, so they are left out."""
    if not _MAPS.is_file():
        return []
    target = os.path.realpath(path)
    ranges, current = [], None
    for line in _MAPS.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            current = None
            if len(fields) == 6 and fields[5] == target and fields[1].endswith("p"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                current = [start, end]
                ranges.append(current)
        elif current is not None and fields[0] == "Anonymous:" and int(fields[1]) > 0:
            ranges.remove(current)
            current = None
    return [tuple(r) for r in ranges]


def _madvise():
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


@contextlib.contextmanager
def releasing_mapped_pages(path, interval=0.05):
    """Drops the resident pages of ``path``'s memory mappings every ``interval`` seconds
    while the block runs, and once when it ends.

    The tensors mapped from the file stay valid: their pages are read again when used.

    Arguments
    ---------
    path : str or os.PathLike
        A file that ``torch.load(..., mmap=True)`` mapped.
    interval : float
        Seconds between releases (the pages touched meanwhile are what stays resident).

    Example
    -------
    >>> import torch
    >>> path = getfixture("tmp_path") / "weights.pt"
    >>> torch.save({"w": torch.ones(1 << 20)}, path)
    >>> w = torch.load(path, mmap=True)["w"]
    >>> with releasing_mapped_pages(path):
    ...     total = float(w.sum())
    >>> total, float(w.sum())
    (1048576.0, 1048576.0)
    """
    ranges, madvise = _clean_mappings(path), _madvise()
    if not ranges or madvise is None:
        yield
        return

    def release():
        for start, end in ranges:
            madvise(start, end - start, _MADV_DONTNEED)

    done = threading.Event()

    def keep_releasing():
        while not done.wait(interval):
            release()

    thread = threading.Thread(target=keep_releasing, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        release()
