"""Utterance IDs, file lists and SpeechBrain CSVs.

A preparation writes SpeechBrain CSVs with the columns::

    ID,duration,wav,spk_id[,words],sample_rate,channels

``ID`` is :func:`path_to_id` of the path relative to the corpus root (so trial lists,
which hold such relative paths, map onto it), ``duration`` is in seconds, ``wav`` is an
absolute path, ``sample_rate``/``channels`` are the file's own.

Example
-------
>>> path_to_id("id10270/x6uYqmx31kE/00001.wav")
'id10270--x6uYqmx31kE--00001'
"""

import csv
import os
import pathlib

BASE_COLUMNS = ["ID", "duration", "wav", "spk_id"]


def path_to_id(rel_path):
    """Utterance ID of a path relative to the corpus root.

    Arguments
    ---------
    rel_path : str or os.PathLike
        Relative path, as trial lists hold it.

    Returns
    -------
    str
        The path without its extension, folders joined by ``--``.

    Example
    -------
    >>> path_to_id("dataset/five/00000007_NO_01.flac")
    'dataset--five--00000007_NO_01'
    """
    parts = pathlib.PurePath(os.fspath(rel_path).replace("\\", "/")).with_suffix("").parts
    return "--".join(p for p in parts if p not in ("", ".", "/"))


def read_file_list(file_list):
    """Paths from a list, a text file (one per line) or a CSV (``wav`` or ``file`` column).

    Arguments
    ---------
    file_list : list of str, str or os.PathLike
        The paths themselves, or a file holding them.

    Returns
    -------
    list of str
        The paths as written (relative ones are resolved by the caller).

    Example
    -------
    >>> path = getfixture("tmp_path") / "list.csv"
    >>> _ = path.write_text("file,class\\ndataset/up/1.flac,up\\n")
    >>> read_file_list(path)
    ['dataset/up/1.flac']
    >>> read_file_list(["a.wav", "b.wav"])
    ['a.wav', 'b.wav']
    """
    if isinstance(file_list, (list, tuple)):
        return [os.fspath(p) for p in file_list]
    if not os.path.isfile(file_list):
        raise ValueError(f"file list {file_list} does not exist")
    if os.fspath(file_list).endswith(".csv"):
        with open(file_list, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            column = next((c for c in ("wav", "file") if c in reader.fieldnames), None)
            if column is None:
                raise ValueError(
                    f"file list {file_list}: no 'wav' or 'file' column "
                    f"(columns: {reader.fieldnames})"
                )
            return [row[column] for row in reader]
    with open(file_list, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def write_csv(path, rows):
    """Writes rows (dicts with the same keys) as a CSV, atomically.

    Arguments
    ---------
    path : str or os.PathLike
        Output CSV.
    rows : list of dict
        Rows; the columns are the keys of the first row (``BASE_COLUMNS`` order
        for an empty list).

    Example
    -------
    >>> path = getfixture("tmp_path") / "x.csv"
    >>> write_csv(path, [{"ID": "a", "duration": 1.0}])
    >>> path.read_text().split()
    ['ID,duration', 'a,1.0']
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else BASE_COLUMNS
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_csv(path):
    """Reads a CSV as a list of dicts (strings).

    Arguments
    ---------
    path : str or os.PathLike
        CSV with a header line.

    Returns
    -------
    list of dict

    Example
    -------
    >>> path = getfixture("tmp_path") / "x.csv"
    >>> write_csv(path, [{"ID": "a", "spk_id": "s1"}])
    >>> read_csv(path)
    [{'ID': 'a', 'spk_id': 's1'}]
    """
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
