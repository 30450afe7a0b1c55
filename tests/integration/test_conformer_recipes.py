"""System B recipes end to end on real speech (SpeechBrain's debug mode: two batches).

The CTC ASR recipe writes a SpeechBrain checkpoint and a pretrained folder from the
Arabic Speech Commands training speakers; the adaptor recipe then trains on the frozen
ASR model with train.py and scores the val-speaker trial list.
"""

import json
import pathlib

import torch

from speechbrain_w2vbert_sv.data.audio import load_audio
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


def test_asr_recipe_then_adaptor_recipe(shared_data, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    import train
    import train_asr_ctc

    data = shared_data / "arabic_speech_commands"
    asr_out = tmp_path / "asr"
    wer = train_asr_ctc.main(
        [
            str(RECIPES / "hparams" / "asr_conformer_ctc.yaml"),
            f"--data_folder={data}",
            f"--output_folder={asr_out}",
            *DEBUG,
        ]
    )
    pretrained = asr_out / "pretrained"
    assert {"asr.ckpt", "normalizer.ckpt", "label_encoder.txt", "wer.json"} <= {
        p.name for p in pretrained.iterdir()
    }
    assert json.loads((pretrained / "wer.json").read_text())["val_speakers_greedy_wer"] == wer
    state = torch.load(pretrained / "asr.ckpt")
    # ModuleList [CNN, Transformer, ctc_lin]
    assert any(k.startswith("0.convblock_0") for k in state)
    assert state["2.w.weight"].shape == (41, 64)

    brain = train.main(
        [
            str(RECIPES / "hparams" / "conformer_adaptor.yaml"),
            f"--data_folder={data}",
            f"--asr_folder={pretrained}",
            f"--output_folder={tmp_path / 'adaptor'}",
            *DEBUG,
        ]
    )
    result = brain.test_results["val_speakers_text_independent.txt"]
    assert 0.0 <= result["EER"] <= 100.0 and result["target_trials"] > 0
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
    brain = train.main(
        [
            str(RECIPES / "hparams" / "conformer_distill.yaml"),
            f"--data_folder={data}",
            f"--asr_folder={pretrained}",
            f"--output_folder={tmp_path / 'distill'}",
            *DEBUG,
        ]
    )
    assert type(brain) is ConformerDistillationBrain
    assert brain.test_results["val_speakers_text_independent.txt"]["target_trials"] > 0
    # Its export is a plain MFA-Conformer speaker model (the auxiliary CTC layer stays
    # behind) with the same embeddings.
    model = load_model(export_model(tmp_path / "distill", tmp_path / "distill_export"))
    assert type(model) is W2VBertSpeakerRecognition
    assert not hasattr(model.mods.embedding_model, "ctc_lin")
    with torch.no_grad():
        expected = brain.modules.embedding_model.eval()(wavs, lens)
    torch.testing.assert_close(model.encode_batch(wavs, lens), expected, atol=1e-5, rtol=0)


def test_random_init_conformer_learns_speakers(shared_data, tmp_path, monkeypatch):
    """conformer_random.yaml (system B's baseline) for 2 epochs on the 18 training
    speakers; EER on the 6 val speakers' text-independent trials (chance: 50 %).

    Measured here with this configuration and ``--seed=1986`` (the yaml's, this
    test's), ``1987``, ``1988`` (one thread): 39.90, 33.62, 36.93 % (mean 36.82, spread
    3.14), about 70 s of CPU time each. The bound is mean + 3 spreads (another machine
    rounds differently and lands where another seed would). Two epochs are what the
    suite affords, and at two epochs the seeds still differ by several points, so the
    bound is loose: it fails a model whose head is zeroed (50.00 %), but shuffled speaker
    labels (every training utterance given a fixed random label) gave 43.92 %, inside
    it. The 15-epoch figures of README_conformer.md are measured by
    compare_conformer.py, not here.
    """
    monkeypatch.syspath_prepend(str(RECIPES))
    import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as measured (and as compare_conformer.py runs it)
    try:
        brain = train.main(
            [
                str(RECIPES / "hparams" / "conformer_random.yaml"),
                f"--data_folder={shared_data / 'arabic_speech_commands'}",
                f"--output_folder={tmp_path / 'random'}",
                "--number_of_epochs=2",
                "--noprogressbar",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    eer = brain.test_results["val_speakers_text_independent.txt"]["EER"]
    print(f"random-init Conformer, 2 epochs, 6 held-out speakers: EER {eer:.2f}%")
    assert eer < 46.3
