#!/usr/bin/env python3
"""Recipe: train a speaker embedding model (w2v-BERT 2.0 + MFA head, or any other
SpeakerEmbeddingModel) with AAM softmax, validated by EER on a trial list.

To run it::

    python recipes/VoxCeleb/train.py recipes/VoxCeleb/hparams/quickstart.yaml
    python recipes/VoxCeleb/train.py recipes/VoxCeleb/hparams/stage1.yaml \\
        --data_folder=/data/voxceleb2_wav --trials_folder=/data/vox1_meta
    torchrun --nproc_per_node=8 recipes/VoxCeleb/train.py \\
        recipes/VoxCeleb/hparams/stage2.yaml ... --init_from=results/stage1/1986

``data_format`` chooses the data: ``voxceleb`` (VoxCeleb1/2 folders and official
trial lists), ``folder`` (any corpus whose speaker is found in the file path by
``speaker_regex``, with a trial list whose speakers are kept out of training) or
``synthetic`` (a generated corpus: no data needed). The first trial list of
``trials`` validates every epoch (its EER selects the best checkpoint); every list
is scored with the best checkpoint at the end. ``--init_from=<previous output
folder>`` starts from the best checkpoint of a previous stage, or from an exported
or imported model folder (its classifier then starts fresh; see README.md).
The steps are those of
:func:`speechbrain_w2vbert_sv.training.speaker_recipe.train_speaker_model`.
"""

import pathlib
import sys

try:
    import speechbrain_w2vbert_sv  # noqa: F401
except ImportError:  # run from a source checkout without installation
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import EncoderSourceError
from speechbrain_w2vbert_sv.training.speaker_recipe import train_speaker_model

main = train_speaker_model

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except EncoderSourceError as error:  # a user's setup problem: one line, no traceback
        sys.exit(f"train.py: error: {error}")
