"""The export of training runs as folders that ``from_hparams`` loads offline.

``export_model`` turns a training run (any stage; LoRA merged into the weights) into
``hyperparams.yaml`` (see :mod:`speechbrain_w2vbert_sv.inference.model_yaml`) and
``embedding_model.ckpt``: the folder to push to a model hub.

Command line: ``w2vbert-sv export --run <output folder> --output <folder>``.
"""

import pathlib

import torch
from speechbrain.utils.logger import get_logger

from speechbrain_w2vbert_sv.inference.interface import W2VBertSpeakerRecognition
from speechbrain_w2vbert_sv.inference.model_card import CARD_FILE, model_card
from speechbrain_w2vbert_sv.inference.model_yaml import HPARAMS_FILE, WEIGHTS_FILE
from speechbrain_w2vbert_sv.inference.training_runs import load_run, trained_model

logger = get_logger(__name__)


def export_model(
    run, out, hparams_file=None, overrides=None, threshold=None, check=True, atol=1e-4
):
    """Exports a training run as a folder that ``from_hparams`` loads offline.

    Writes ``hyperparams.yaml``, ``embedding_model.ckpt`` (LoRA merged) and a model
    card (``README.md``) into ``out``: the folder to push to a model hub.

    Arguments
    ---------
    run : str or os.PathLike
        Training output folder (latest checkpoint) or checkpoint folder.
    out : str or os.PathLike
        Output folder (created; existing export files are replaced).
    hparams_file : str or os.PathLike, optional
        Training hyperparameters (default: the run's resolved ``hyperparams.yaml``).
    overrides : dict, optional
        Overrides of the training hyperparameters (e.g. placeholders of a recipe
        yaml).
    threshold : float, optional
        Decision threshold on the cosine score (default: the template's).
    check : bool
        Reload the folder with ``from_hparams`` and compare its embeddings of random
        audio with those of the model as trained (LoRA unmerged).
    atol : float
        Largest embedding difference the check accepts.

    Returns
    -------
    pathlib.Path
        The output folder.
    """
    hparams, text = load_run(run, hparams_file, overrides, threshold)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / HPARAMS_FILE).write_text(text, encoding="utf-8")
    torch.save(hparams["embedding_model"].state_dict(), out / WEIGHTS_FILE)
    (out / CARD_FILE).write_text(model_card(hparams["model"]), encoding="utf-8")
    del hparams  # the check holds two more copies of a 2.4 GB model
    logger.info("Exported %s to %s", run, out)
    if check:
        reference, exact_padding = trained_model(run, hparams_file, overrides)
        exported = W2VBertSpeakerRecognition.from_hparams(source=str(out))
        wavs = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
        lens = torch.tensor([1.0, 0.6 if exact_padding else 1.0])
        with torch.no_grad():
            expected = reference(wavs, lens)
            got = exported.encode_batch(wavs, lens).cpu()
        error = float((got - expected).abs().max())
        if error > atol:
            raise ValueError(
                f"export check failed: the exported model's embeddings differ from the "
                f"trained model's by up to {error:.3g} (> {atol})"
            )
        logger.info("Export check passed: max embedding difference %.3g", error)
    return out
