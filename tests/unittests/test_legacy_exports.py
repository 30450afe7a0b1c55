"""Folders exported by earlier versions keep loading and giving the same embeddings.

``tests/data/legacy_exports`` holds tiny exported folders of each generation, with
``expected_embeddings.pt``: the embeddings that version computed for ``inputs.pt``.

* ``w2vbert_mfa`` and ``conformer_mfa`` (main at 31a7373, ``make_legacy_exports.py``):
  written before the package was split into ``lobes/``, ``training/``, ``scoring/``
  and ``inference/``: their ``hyperparams.yaml`` names the module paths of that time
  (``speechbrain_w2vbert_sv.heads.MFAHead``, ``speechbrain_w2vbert_sv.frontend.W2VBertFbank``,
  ``speechbrain_w2vbert_sv.embedding_model.SpeakerEmbeddingModel``, ...).
* ``main_0ff0bd5/`` (main at 0ff0bd5, ``make_exports.py``): written before
  ``SpeakerEmbeddingModel`` became a subclass of ``FeatureEmbeddingModel`` and the
  w2v-BERT front end was split; their ``hyperparams.yaml`` names the ``lobes/`` paths
  (``speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertFbank``, ...), ``model_type``
  and ``pooling_eps``. The w2v-BERT model had LoRA (rank 2) merged at export. Same
  seeds as 31a7373's, so the weights and embeddings are the same: only the yaml differs.
"""

import os
import pathlib
import subprocess
import sys

import pytest
import torch
from speechbrain.inference.classifiers import EncoderClassifier

from speechbrain_w2vbert_sv.inference.interface import W2VBertSpeakerRecognition, load_model

REPO = pathlib.Path(__file__).resolve().parents[2]
LEGACY = REPO / "tests" / "data" / "legacy_exports"

# Generation (subfolder of LEGACY; "" for 31a7373's, kept where they were first written).
GENERATIONS = {"31a7373": "", "main_0ff0bd5": "main_0ff0bd5"}
MODELS = ["w2vbert_mfa", "conformer_mfa"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("generation", list(GENERATIONS))
def test_legacy_folder_loads_with_the_same_embeddings(generation, name, tmp_path):
    folder = LEGACY / GENERATIONS[generation] / name
    inputs = torch.load(LEGACY / "inputs.pt", weights_only=True)
    expected = torch.load(folder / "expected_embeddings.pt", weights_only=True)
    model = load_model(folder)
    assert isinstance(model, W2VBertSpeakerRecognition)
    assert model.hparams.threshold == 0.35
    got = model.encode_batch(inputs["wavs"], inputs["lens"])
    assert got.shape == expected.shape
    # Recorded with 2 threads; another thread count rounds differently (1.0e-5 seen
    # with one thread on embeddings of magnitude ~1.6), a wrong model by far more.
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # A different input gives different embeddings: the comparison can fail.
    other = model.encode_batch(inputs["wavs"].flip(1), inputs["lens"])
    assert (other - expected).abs().max() > 1e-3
    # SpeechBrain's stock class reads the same folder (fetched into a savedir of its
    # own, so the test leaves the data folder as it was).
    stock = EncoderClassifier.from_hparams(source=str(folder), savedir=str(tmp_path / "stock"))
    torch.testing.assert_close(
        stock.encode_batch(inputs["wavs"], inputs["lens"]), expected, atol=1e-4, rtol=0
    )


def test_old_paths_resolve_without_an_import_hook(tmp_path):
    """In a fresh interpreter: importing the package installs nothing on the import
    system, and SpeechBrain's stock loader, run first, reads a folder whose
    ``hyperparams.yaml`` names the old module paths, with the recorded embeddings."""
    folder = LEGACY / GENERATIONS["31a7373"] / "w2vbert_mfa"
    assert "speechbrain_w2vbert_sv.heads." in (folder / "hyperparams.yaml").read_text()
    code = f"""
import sys, torch
import speechbrain_w2vbert_sv
ours = "speechbrain_w2vbert_sv.legacy_paths"
assert not any(type(f).__module__ == ours for f in sys.meta_path), sys.meta_path
assert "speechbrain_w2vbert_sv.heads" not in sys.modules
from speechbrain.inference.classifiers import EncoderClassifier
stock = EncoderClassifier.from_hparams(source={str(folder)!r}, savedir={str(tmp_path)!r})
inputs = torch.load({str(LEGACY / "inputs.pt")!r}, weights_only=True)
expected = torch.load({str(folder / "expected_embeddings.pt")!r}, weights_only=True)
torch.testing.assert_close(
    stock.encode_batch(inputs["wavs"], inputs["lens"]), expected, atol=1e-4, rtol=0
)
assert not any(type(f).__module__ == ours for f in sys.meta_path), sys.meta_path
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
