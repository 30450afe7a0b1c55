"""WeSpeaker's own w2v-BERT speaker model, from the installed ``wespeaker-unofficial``
package, as the reference of the import/export tests and of ``benchmarks/interop.py``;
its spectral clusterer, the reference of ``benchmarks/diarization.py``'s clustering.

The package's ``__init__`` files import its command line and heavy dependencies; the
modules used here import only torch, transformers, peft, pyyaml, SciPy and scikit-learn,
so they are loaded without those files (see ../shared/PEERS.md).
"""

import importlib
import importlib.util
import os
import sys
import types

import yaml

_PACKAGES = (
    "wespeaker",
    "wespeaker.models",
    "wespeaker.frontend",
    "wespeaker.utils",
    "wespeaker.diar",
)
# What wespeaker/diar/spectral_clusterer.py sets for itself at import.
_CLUSTERER_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _register_packages():
    """The package folders as empty modules: their ``__init__`` files are not run."""
    if "wespeaker" not in sys.modules:
        spec = importlib.util.find_spec("wespeaker")
        if spec is None or spec.origin is None:
            raise ImportError("wespeaker-unofficial is not installed")
        root = os.path.dirname(os.path.dirname(spec.origin))
        for name in _PACKAGES:
            package = types.ModuleType(name)
            package.__path__ = [os.path.join(root, *name.split("."))]
            sys.modules[name] = package


def wespeaker_modules():
    """WeSpeaker's model, frontend and checkpoint modules.

    Returns
    -------
    types.SimpleNamespace
        ``mfa`` (``W2VBert_Adapter_MFA``), ``frontend`` (``W2VBertFrontend``),
        ``checkpoint`` (``load_checkpoint``).

    Raises
    ------
    ImportError
        ``wespeaker-unofficial`` is not installed.
    """
    _register_packages()
    return types.SimpleNamespace(
        mfa=importlib.import_module("wespeaker.models.w2vbert_adapter_mfa"),
        frontend=importlib.import_module("wespeaker.frontend.w2vbert"),
        checkpoint=importlib.import_module("wespeaker.utils.checkpoint"),
    )


def wespeaker_spectral_cluster():
    """WeSpeaker's spectral clustering of a recording's embeddings.

    ``cluster(embeddings, p=.01, num_spks=None, min_num_spks=1, max_num_spks=20)`` of
    ``wespeaker/diar/spectral_clusterer.py``, returning integer labels. The module
    imports kaldiio for its command line only (a stand-in is registered when kaldiio
    is absent) and sets thread variables at import (put back here). Its k-means draws
    from NumPy's global random state: seed it for repeatable labels.

    Returns
    -------
    callable

    Raises
    ------
    ImportError
        ``wespeaker-unofficial`` is not installed.
    """
    _register_packages()
    if importlib.util.find_spec("kaldiio") is None:
        sys.modules.setdefault("kaldiio", types.ModuleType("kaldiio"))
    saved = {name: os.environ.get(name) for name in _CLUSTERER_THREAD_VARIABLES}
    try:
        module = importlib.import_module("wespeaker.diar.spectral_clusterer")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return module.cluster


def load_wespeaker_folder(folder):
    """A WeSpeaker model folder loaded as ``wespeaker.cli.speaker.load_model_pt`` does.

    Arguments
    ---------
    folder : str
        Holding ``config.yaml`` and ``avg_model.pt``.

    Returns
    -------
    torch.nn.Module
        ``W2VBert_Adapter_MFA`` with its ``frontend``, in eval mode.
    """
    peer = wespeaker_modules()
    with open(os.path.join(folder, "config.yaml")) as f:
        config = yaml.safe_load(f)
    if config["model"] != "W2VBert_Adapter_MFA":
        raise ValueError(f"unexpected model {config['model']}")
    model = peer.mfa.W2VBert_Adapter_MFA(**config["model_args"])
    args = config["dataset_args"]
    frontend = peer.frontend.W2VBertFrontend(
        **args["w2vbert_args"], sample_rate=args["resample_rate"]
    )
    model.add_module("frontend", frontend)
    peer.checkpoint.load_checkpoint(model, os.path.join(folder, "avg_model.pt"))
    return model.eval()


def wespeaker_embed(model, wavs):
    """WeSpeaker's embeddings of a batch of equal-length waveforms [B, S] -> [B, E]."""
    import torch

    lens = torch.full((wavs.shape[0],), wavs.shape[1])
    hidden_states, _ = model.frontend(wavs, lens)
    return model(hidden_states)[1]


def checkpoint_key_mismatch(model, path):
    """What a strict ``load_state_dict`` of a WeSpeaker checkpoint into ``model`` would
    reject (WeSpeaker's ``load_checkpoint`` loads with ``strict=False`` and only logs it).

    Arguments
    ---------
    model : torch.nn.Module
        E.g. from :func:`load_wespeaker_folder`.
    path : str or os.PathLike
        ``avg_model.pt`` (a state dict, or one under ``state_dict``).

    Returns
    -------
    missing : list of str
        The model's tensors that the checkpoint lacks (sorted).
    unexpected : list of str
        The checkpoint's tensors that the model has no place for (sorted).
    mismatched : list of str
        Tensors of both whose shapes differ (sorted).
    """
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(checkpoint))
    unexpected = sorted(set(checkpoint) - set(expected))
    mismatched = sorted(
        k for k in set(expected) & set(checkpoint) if expected[k].shape != checkpoint[k].shape
    )
    return missing, unexpected, mismatched
