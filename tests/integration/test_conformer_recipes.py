"""System B recipes end to end on real speech (SpeechBrain's debug mode: two batches).

The CTC ASR recipe writes a SpeechBrain checkpoint and a pretrained folder from the
Arabic Speech Commands training speakers; the adaptor recipe then trains on the frozen
ASR model with train.py and scores the val-speaker trial list.
"""

import json
import pathlib

import torch

from speechbrain_w2vbert_sv.distillation import ConformerDistillationBrain

RECIPES = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb"
DEBUG = ["--debug", "--debug_batches=2", "--debug_epochs=1"]


def test_asr_recipe_then_adaptor_recipe(shared_data, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    import train
    import train_asr_ctc

    data = shared_data / "arabic_speech_commands"
    asr_out = tmp_path / "asr"
    wer = train_asr_ctc.main(
        [str(RECIPES / "hparams" / "asr_conformer_ctc.yaml"), f"--data_folder={data}",
         f"--output_folder={asr_out}", *DEBUG]
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
        [str(RECIPES / "hparams" / "conformer_adaptor.yaml"), f"--data_folder={data}",
         f"--asr_folder={pretrained}", f"--output_folder={tmp_path / 'adaptor'}", *DEBUG]
    )
    result = brain.test_results["val_speakers_text_independent.txt"]
    assert 0.0 <= result["EER"] <= 100.0 and result["target_trials"] > 0
    # The frozen ASR model is still exactly the checkpoint's.
    asr_model = brain.modules.embedding_model.asr_model
    for key, value in asr_model.backbone.Transformer.state_dict().items():
        torch.testing.assert_close(value, state["1." + key])

    # The distillation recipe runs through train.py with the Brain it names.
    brain = train.main(
        [str(RECIPES / "hparams" / "conformer_distill.yaml"), f"--data_folder={data}",
         f"--asr_folder={pretrained}", f"--output_folder={tmp_path / 'distill'}", *DEBUG]
    )
    assert type(brain) is ConformerDistillationBrain
    assert brain.test_results["val_speakers_text_independent.txt"]["target_trials"] > 0
