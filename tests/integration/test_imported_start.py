"""An imported model is a starting point: the training recipe (``--init_from``) and the
pruning recipe (``--teacher``) accept its folder, on a tiny imported model."""

import pathlib

import pytest
import torch
import yaml

from speechbrain_w2vbert_sv.inference.checkpoint_import import (
    import_checkpoint,
    random_model_state,
)
from speechbrain_w2vbert_sv.inference.interface import load_model
from speechbrain_w2vbert_sv.inference.wespeaker_export import wespeaker_state_dict
from speechbrain_w2vbert_sv.training.checkpoints import init_from_checkpoint
from tests.integration.test_prune_recipe import DATA, MODEL, run, stage2_model

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A tiny random model in WeSpeaker's format (the recipes' head sizes), imported."""
    folder = tmp_path_factory.mktemp("wespeaker")
    state = random_model_state(TINY, adapter_size=128, embedding_size=32, seed=7)
    torch.save(wespeaker_state_dict(state), folder / "avg_model.pt")
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": "W2VBert_Adapter_MFA"}))
    return import_checkpoint(folder, "wespeaker", folder / "imported")


def test_stage_model_starts_as_the_imported_model(imported, tmp_path):
    hparams = stage2_model(tmp_path, pooling_eps=1e-5)
    model, classifier = hparams["embedding_model"], hparams["make_classifier"](out_neurons=5)
    before = classifier.weight.detach().clone()
    init_from_checkpoint(imported, {"embedding_model": model, "classifier": classifier})
    assert torch.equal(classifier.weight, before)  # the classifier starts fresh
    wavs = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model.eval()(wavs)
    expected = load_model(imported).encode_batch(wavs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # The pooling's variance floor is part of the model: a mismatch is an error.
    other = stage2_model(tmp_path)["embedding_model"]
    with pytest.raises(ValueError, match="variance floor of 1e-05.*--pooling_eps=1e-05"):
        init_from_checkpoint(imported, {"embedding_model": other})


def test_training_and_pruning_recipes_start_from_it(imported, tmp_path):
    # Stage 2 from the imported model: a fresh classifier for this data's speakers.
    stdout = run(
        "train.py",
        "stage2.yaml",
        tmp_path / "stage2",
        *MODEL,
        *DATA,
        f"--init_from={imported}",
        "--pooling_eps=1e-5",
        "--number_of_epochs=1",
        "--make_augment=null",
    )
    assert "EER" in stdout
    assert (tmp_path / "stage2" / "save" / "label_encoder.txt").is_file()
    # Pruning with the imported model as the teacher, then fine-tuning the result.
    run(
        "prune.py",
        "prune.yaml",
        tmp_path / "prune",
        *MODEL,
        *DATA,
        f"--teacher={imported}",
        "--pooling_eps=1e-5",
        "--target_sparsity=0.6",
        "--warmup_steps=10",
        "--prune_epochs=1",
        "--distill_epochs=1",
        "--gates_lr=0.5",
        "--lambdas_lr=0.5",
    )
    distilled = tmp_path / "prune" / "distilled"
    assert (distilled / "encoder" / "config.json").is_file()
    stdout = run(
        "train.py",
        "stage2.yaml",
        tmp_path / "finetune",
        *MODEL[2:],
        *DATA,
        f"--w2vbert_source={distilled / 'encoder'}",
        "--w2vbert_config={}",
        f"--init_from={distilled}",
        "--init_from_modules=[embedding_model]",
        "--pooling_eps=1e-5",
        "--number_of_epochs=0",
    )
    assert "EER" in stdout
    assert pathlib.Path(tmp_path / "finetune" / "save").is_dir()
