#!/usr/bin/env python3
"""Speaker verification of a trial list with a trained or exported model.

Whole-utterance embeddings of every file (each once), cosine scoring, optional
mean-embedding subtraction, adaptive s-norm and QMF calibration; writes the scores,
a results table (EER, minDCF at p_target 0.01 and 0.05) and DET/histogram plots.
Every file is checked before any embedding work: a missing or unreadable file stops
the run with the first offending lines of the trial list.

Usage::

    python recipes/VoxCeleb/verify.py recipes/VoxCeleb/hparams/verification.yaml \\
        --model=<exported folder | training output folder> \\
        --trials=<trial list> --data_folder=<root of its paths> [--device=cuda:0] \\
        [--embeddings=<store folder of `w2vbert-sv embed`>]

With ``--embeddings`` the files found in that store (read memory-mapped, only the rows
needed) are not embedded again, e.g. a cohort embedded beforehand by torchrun.

Authors
 * speechbrain-w2vbert-sv contributors
"""

import pathlib
import sys

try:
    import speechbrain_w2vbert_sv  # noqa: F401
except ImportError:  # run from a source checkout without installation
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))


from speechbrain_w2vbert_sv.experiment import start_experiment
from speechbrain_w2vbert_sv.inference.verification import (
    VerificationOptions,
    verify_trial_list,
)


def main(argv=None):
    """Runs the verification; returns ``{system: metrics}`` (see verify_trial_list)."""
    hparams, run_opts = start_experiment(argv)
    # The model is loaded once every file has been checked.
    return verify_trial_list(
        hparams["model"],
        hparams["trials"],
        hparams["data_folder"],
        hparams["output_folder"],
        VerificationOptions.from_hparams(hparams),
        run_opts=run_opts,
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:
        # Bad input (files, trial lists, model folders): the message says it all.
        sys.exit(f"verify.py: error: {error}")
