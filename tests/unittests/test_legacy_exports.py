"""Folders exported by earlier versions keep loading and giving the same embeddings.

``tests/data/legacy_exports`` holds tiny folders written before the package was split
into ``lobes/``, ``training/``, ``scoring/`` and ``inference/``: their
``hyperparams.yaml`` names the old module paths (``speechbrain_w2vbert_sv.lobes.heads.MFAHead``,
``speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertFbank``, ...), and ``expected_embeddings.pt``
holds the embeddings that version computed for ``inputs.pt``.
"""

import pathlib

import pytest
import torch
from speechbrain.inference.classifiers import EncoderClassifier

from speechbrain_w2vbert_sv.inference.interface import W2VBertSpeakerRecognition, load_model

LEGACY = pathlib.Path(__file__).resolve().parents[1] / "data" / "legacy_exports"


@pytest.mark.parametrize("name", ["w2vbert_mfa", "conformer_mfa"])
def test_legacy_folder_loads_with_the_same_embeddings(name):
    folder = LEGACY / name
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
    # SpeechBrain's stock class reads the same folder.
    stock = EncoderClassifier.from_hparams(source=str(folder))
    torch.testing.assert_close(
        stock.encode_batch(inputs["wavs"], inputs["lens"]), expected, atol=1e-4, rtol=0
    )
