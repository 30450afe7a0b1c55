"""System B recipes end to end on real speech (Arabic Speech Commands).

The CTC ASR recipe writes a SpeechBrain checkpoint and a pretrained folder from the
training speakers; the adaptor and distillation recipes then train on it with train.py,
score the val-speaker trial list and export (SpeechBrain's debug mode: two batches). The
random-init system trains two real epochs and must verify the held-out speakers at least
3 points of EER better than the same run trained on shuffled speaker labels.

The systems built on the ASR model get no such bound here, because none that the suite
can afford separates a learning model from a broken one (measured on the development
machine, seeds 1986, 1987, 1988, one thread): after 14 ASR epochs (about 9 CPU minutes)
the greedy WER on the val speakers was 45.8, 63.8 and 87.2 % (mean + 3 spreads: 127 %,
above the 100 % of a model that emits only blanks), because the step at which greedy
decoding leaves the all-blank output differs from seed to seed (37.4, 56.4, 67.6 % when
resumed to 16 epochs); and two epochs of each system on that ASR model gave 46.8-48.1 %
EER (ASR-initialised 47.8, 47.7, 46.8; distillation 48.1, 47.3, 46.8; adaptor 47.2,
47.2, 46.8), against 49.0 % for the same models before training. Their
learning is measured at full length over three seeds by ``compare_conformer.py`` and
``seed_spread.py`` (README_conformer.md).
"""

import importlib
import json
import pathlib
import shutil
import sys

import numpy as np
import torch

from speechbrain_w2vbert_sv.data.audio import load_audio
from speechbrain_w2vbert_sv.data.csv_io import read_csv, write_csv
from speechbrain_w2vbert_sv.inference.export import export_model
from speechbrain_w2vbert_sv.inference.interface import (
    ASRSpeakerRecognition,
    W2VBertSpeakerRecognition,
    load_model,
)
from speechbrain_w2vbert_sv.training.asr_distillation import ConformerDistillationBrain

RECIPES = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb"
# debug_persistently: checkpoints in the output folder, for the exports.
DEBUG = ["--debug", "--debug_persistently", "--debug_batches=2", "--debug_epochs=1"]
TRIALS = "val_speakers_text_independent.txt"
RANDOM = "conformer_random.yaml"


def run_recipe(script, hparams_file, data_folder, output_folder, *options):
    """Runs ``<script>.main`` (a recipe of recipes/VoxCeleb) on the Arabic Speech Commands
    folder with one torch thread, as the bounds were measured; returns what it returns."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sys.path.insert(0, str(RECIPES))
    try:
        recipe = importlib.import_module(script)
        return recipe.main(
            [
                str(RECIPES / "hparams" / hparams_file),
                f"--data_folder={data_folder}",
                f"--output_folder={output_folder}",
                "--noprogressbar",
                *options,
            ]
        )
    finally:
        sys.path.remove(str(RECIPES))
        torch.set_num_threads(threads)


def test_asr_recipe_then_adaptor_and_distillation_recipes(shared_data, tmp_path):
    data = shared_data / "arabic_speech_commands"
    asr_out = tmp_path / "asr"
    wer = run_recipe("train_asr_ctc", "asr_conformer_ctc.yaml", data, asr_out, *DEBUG)
    pretrained = asr_out / "pretrained"
    assert {"asr.ckpt", "normalizer.ckpt", "label_encoder.txt", "wer.json"} <= {
        p.name for p in pretrained.iterdir()
    }
    assert json.loads((pretrained / "wer.json").read_text())["val_speakers_greedy_wer"] == wer
    state = torch.load(pretrained / "asr.ckpt")
    # ModuleList [CNN, Transformer, ctc_lin]
    assert any(k.startswith("0.convblock_0") for k in state)
    assert state["2.w.weight"].shape == (41, 64)

    options = [f"--asr_folder={pretrained}", *DEBUG]
    brain = run_recipe("train", "conformer_adaptor.yaml", data, tmp_path / "adaptor", *options)
    # Scored (debug mode: the trials among its two batches).
    result = brain.test_results[TRIALS]
    assert result["target_trials"] > 0 and result["nontarget_trials"] > 0
    # The frozen ASR model is still exactly the checkpoint's.
    asr_model = brain.modules.embedding_model.asr_model
    for key, value in asr_model.backbone.Transformer.state_dict().items():
        torch.testing.assert_close(value, state["1." + key])

    # The export names the interface that transcribes too; one pass gives the ASR
    # model's own words and the trained adaptor's embeddings.
    clips = sorted((data / "dataset").glob("*/*.flac"))[:2]
    wavs = torch.stack([load_audio(c) for c in clips])
    lens = torch.tensor([1.0, 0.8])
    folder = export_model(tmp_path / "adaptor", tmp_path / "adaptor_export")
    model = load_model(folder)
    assert isinstance(model, ASRSpeakerRecognition)
    assert model.hparams.tokens[model.hparams.blank_index] == "<blank>"
    words, embeddings = model.transcribe_and_encode_batch(wavs, lens)
    with torch.no_grad():
        expected = brain.modules.embedding_model.eval()(wavs, lens)
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=0)
    assert words == model.transcribe_batch(wavs, lens) and len(words) == 2

    # The distillation recipe runs through train.py with the Brain it names.
    brain = run_recipe("train", "conformer_distill.yaml", data, tmp_path / "distill", *options)
    assert type(brain) is ConformerDistillationBrain
    assert brain.test_results[TRIALS]["target_trials"] > 0
    # Its export is a plain MFA-Conformer speaker model (the auxiliary CTC layer stays
    # behind) with the same embeddings.
    model = load_model(export_model(tmp_path / "distill", tmp_path / "distill_export"))
    assert type(model) is W2VBertSpeakerRecognition
    assert not hasattr(model.mods.embedding_model, "ctc_lin")
    with torch.no_grad():
        expected = brain.modules.embedding_model.eval()(wavs, lens)
    torch.testing.assert_close(model.encode_batch(wavs, lens), expected, atol=1e-5, rtol=0)


def shuffle_speakers(prepared, save_folder, seed=0):
    """Copies a run's prepared data (``<save>/data``) into ``save_folder`` with the
    training speakers permuted over the utterances (a fixed random label each, the
    class sizes kept): the recipe finds its data prepared and trains on labels that
    carry no speaker. Returns the new training CSV's path."""
    shutil.copytree(prepared, save_folder / "data")
    train_csv = save_folder / "data" / "train.csv"
    rows = read_csv(train_csv)
    labels = np.random.default_rng(seed).permutation([row["spk_id"] for row in rows]).tolist()
    write_csv(train_csv, [{**row, "spk_id": label} for row, label in zip(rows, labels)])
    return train_csv


def test_random_init_conformer_learns_speakers(shared_data, tmp_path):
    """conformer_random.yaml (system B's baseline) for 2 epochs on the 18 training
    speakers; EER on the 6 val speakers' text-independent trials (chance: 50 %),
    against the same run (same seed) trained on shuffled speaker labels.

    At two epochs the seeds differ by several points (39.90, 33.62, 36.93 % for seeds
    1986, 1987, 1988), so a fixed bound that holds for every seed (mean + 3 spreads:
    46.3 %) also passes a run with shuffled labels (43.92 % measured earlier); the
    same-seed control does not. Measured here (one thread) with ``--seed`` 1986 (this
    test's), 1987, 1988: EER 39.89, 33.62, 36.93 %; shuffled labels 46.20, 43.16,
    43.91 %: 6.3 points apart or more, about 80 s of CPU time each run.
    """
    data = shared_data / "arabic_speech_commands"
    brain = run_recipe("train", RANDOM, data, tmp_path / "real", "--number_of_epochs=2")
    eer = brain.test_results[TRIALS]["EER"]
    shuffled = shuffle_speakers(tmp_path / "real" / "save" / "data", tmp_path / "shuffled" / "save")
    labels = [row["spk_id"] for row in read_csv(shuffled)]
    control = run_recipe("train", RANDOM, data, tmp_path / "shuffled", "--number_of_epochs=2")
    # It trained on the shuffled list (the recipe found its data prepared).
    assert [row["spk_id"] for row in read_csv(shuffled)] == labels
    shuffled_eer = control.test_results[TRIALS]["EER"]
    print(f"random-init Conformer, 2 epochs: EER {eer:.2f}%, shuffled labels {shuffled_eer:.2f}%")
    assert eer <= shuffled_eer - 3.0, f"EER {eer:.2f}%, shuffled labels {shuffled_eer:.2f}%"
