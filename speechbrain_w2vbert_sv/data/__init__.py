"""Corpus preparation, augmentation lists and data pipelines.

Every preparation writes SpeechBrain CSVs with the columns
``ID,duration,wav,spk_id[,words],sample_rate,channels`` (see
:mod:`speechbrain_w2vbert_sv.data.csv_io`) and a ``skipped.txt`` report of the files
left out, and does nothing when re-run with the same options.
"""

from speechbrain_w2vbert_sv.data.augmentation import (
    RandomAugment,
    prepare_noise_csv,
    prepare_rir_csv,
    reverberate,
    synthesize_rirs,
)
from speechbrain_w2vbert_sv.data.cnceleb import prepare_cnceleb
from speechbrain_w2vbert_sv.data.csv_io import path_to_id, read_csv
from speechbrain_w2vbert_sv.data.file_checks import check_audio_file, check_audio_files
from speechbrain_w2vbert_sv.data.generic import (
    prepare_arabic_speech_commands,
    prepare_folder_corpus,
    prepare_fsdd,
)
from speechbrain_w2vbert_sv.data.pipeline import make_eval_dataset, make_train_dataset
from speechbrain_w2vbert_sv.data.synthetic import make_synthetic_corpus
from speechbrain_w2vbert_sv.data.voxblink2 import prepare_voxblink2, prepare_voxceleb_voxblink2
from speechbrain_w2vbert_sv.data.voxceleb import (
    TRIAL_LISTS,
    convert_to_wav,
    place_trial_lists,
    prepare_voxceleb,
)

__all__ = [
    "RandomAugment",
    "TRIAL_LISTS",
    "check_audio_file",
    "check_audio_files",
    "convert_to_wav",
    "make_eval_dataset",
    "make_synthetic_corpus",
    "make_train_dataset",
    "path_to_id",
    "place_trial_lists",
    "prepare_arabic_speech_commands",
    "prepare_cnceleb",
    "prepare_folder_corpus",
    "prepare_fsdd",
    "prepare_noise_csv",
    "prepare_rir_csv",
    "prepare_voxblink2",
    "prepare_voxceleb",
    "prepare_voxceleb_voxblink2",
    "read_csv",
    "reverberate",
    "synthesize_rirs",
]
