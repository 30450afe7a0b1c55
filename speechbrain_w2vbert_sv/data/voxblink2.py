"""VoxBlink2 preparation, alone or with VoxCeleb as one training set.

Layout, from the corpus's own scripts (github.com/VoxBlink2/ScriptsForVoxBlink2): only
annotations are released (YouTube video IDs, time stamps in
``meta/<spk>/<video>/<utt>.txt``, the speaker list ``data/spk2videos`` with
``<spk> <video> ...`` lines); its ``cropper_audio.py`` cuts the downloaded audio into
``<save_dir>/<spk>/<video>/<utt>.wav``, where ``<spk>`` is ``id`` + 6 digits
(``id000000``) and ``<utt>`` the 5-digit name of its time-stamp file. Every file in that
layout under the folder is used (whatever lies above ``<spk>/``); other audio files are
reported as having no speaker ID and left out. The corpus's speaker verification test
(``data/test_vox``: ``wav.scp`` and a ``label enroll test`` ``trials`` file) is
VoxCeleb1-O, prepared by :mod:`~speechbrain_w2vbert_sv.data.voxceleb`; its open-set
identification protocol (``data/ossi`` gallery/probe lists) is not a verification list.

Utterance IDs are :func:`~speechbrain_w2vbert_sv.data.csv_io.path_to_id` of the path
relative to the folder, e.g. ``id000000--DwgYRqnQZHM--00000``. Combined with VoxCeleb
(:func:`prepare_voxceleb_voxblink2`), every speaker and utterance ID is prefixed by its
corpus (``voxblink2--id000000``, ``voxceleb--id00012``): VoxBlink2's 6-digit IDs do not
collide with VoxCeleb's 5-digit ones, but those of VoxBlink (v1) and CN-Celeb would.

Example
-------
>>> import re
>>> re.search(VOXBLINK2_SPEAKER_REGEX, "audio/id000123/DwgYRqnQZHM/00004.wav").group(1)
'id000123'
>>> re.search(VOXBLINK2_SPEAKER_REGEX, "id00012/abc/00001.wav") is None
True
"""

import pathlib

from speechbrain_w2vbert_sv.data.generic import prepare_folder_corpus
from speechbrain_w2vbert_sv.data.preparation import combine_corpora
from speechbrain_w2vbert_sv.data.voxceleb import prepare_voxceleb

VOXBLINK2_SPEAKER_REGEX = r"(?:^|/)(id\d{6})/[^/]+/[^/]+\.\w+$"
VOXBLINK2_EXTENSIONS = (".wav", ".flac")


def prepare_voxblink2(data_folder, save_folder, **kwargs):
    """Prepares VoxBlink2's training CSV (``train``, and ``dev`` with ``dev_ratio``).

    Arguments
    ---------
    data_folder : str or os.PathLike
        The audio root (``<spk>/<video>/<utt>.wav`` below it).
    save_folder : str or os.PathLike
        Output folder: ``train.csv`` (``ID,duration,wav,spk_id,sample_rate,
        channels``), ``skipped.txt``, the options file.
    **kwargs
        Further options of
        :func:`~speechbrain_w2vbert_sv.data.generic.prepare_folder_corpus`
        (``dev_ratio``, ``num_workers``, ``read_samples``, ``skip_prep``, ...).

    Returns
    -------
    dict
        Split name -> CSV path.

    Example
    -------
    >>> import numpy, soundfile
    >>> root = getfixture("tmp_path") / "voxblink2"
    >>> (root / "id000007/vidA").mkdir(parents=True)
    >>> soundfile.write(root / "id000007/vidA/00000.wav", numpy.zeros(1600), 16000)
    >>> csvs = prepare_voxblink2(root, root.parent / "save")
    >>> from speechbrain_w2vbert_sv.data.csv_io import read_csv
    >>> [(r["ID"], r["spk_id"]) for r in read_csv(csvs["train"])]
    [('id000007--vidA--00000', 'id000007')]
    """
    kwargs.setdefault("extensions", VOXBLINK2_EXTENSIONS)
    return prepare_folder_corpus(
        data_folder, save_folder, speaker_regex=VOXBLINK2_SPEAKER_REGEX, **kwargs
    )


def prepare_voxceleb_voxblink2(
    voxceleb_folder,
    voxblink2_folder,
    save_folder,
    verification_list,
    dev_ratio=0.0,
    skip_prep=False,
    **kwargs,
):
    """VoxCeleb (e.g. VoxCeleb2 dev) + VoxBlink2 as one training set, VoxCeleb1 tests.

    Each corpus is prepared in its own sub-folder (``voxceleb/``, ``voxblink2/``;
    each resumes on its own), then their ``train`` (and ``dev``) CSVs are combined
    with corpus-prefixed speaker labels (see the module docstring); the speaker
    counts are written to ``combined_corpora.json``. The test split is VoxCeleb's.

    Arguments
    ---------
    voxceleb_folder : str, os.PathLike or list of them
        VoxCeleb root(s), as for
        :func:`~speechbrain_w2vbert_sv.data.voxceleb.prepare_voxceleb`.
    voxblink2_folder : str or os.PathLike
        VoxBlink2 audio root.
    save_folder : str or os.PathLike
        Output folder.
    verification_list : str, os.PathLike or list of them
        VoxCeleb1 trial list(s): their speakers stay out of training, their files
        make the ``test`` split.
    dev_ratio : float
        Fraction of each training speaker's utterances held out as ``dev``.
    skip_prep : bool
        Do nothing and return the CSV paths.
    **kwargs
        ``seed``, ``min_duration``, ``sample_rate``, ``read_samples``,
        ``num_workers`` of both preparations.

    Returns
    -------
    dict
        ``train``, ``test`` (and ``dev``) CSV paths.
    """
    save_folder = pathlib.Path(save_folder)
    splits = ("train", "dev") if dev_ratio > 0 else ("train",)
    if skip_prep:
        return {s: save_folder / f"{s}.csv" for s in splits} | {
            "test": save_folder / "voxceleb" / "test.csv"
        }
    voxceleb = prepare_voxceleb(
        voxceleb_folder,
        save_folder / "voxceleb",
        splits=splits + ("test",),
        verification_list=verification_list,
        dev_ratio=dev_ratio,
        **kwargs,
    )
    voxblink2 = prepare_voxblink2(
        voxblink2_folder, save_folder / "voxblink2", dev_ratio=dev_ratio, **kwargs
    )
    corpora = {"voxceleb": voxceleb, "voxblink2": voxblink2}
    combined = combine_corpora(corpora, save_folder, splits=splits)
    return {**combined, "test": voxceleb["test"]}
