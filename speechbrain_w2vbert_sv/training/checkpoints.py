"""Crash-safe checkpoints, best-checkpoint selection and initialisation from a run.

:class:`AtomicCheckpointer` makes checkpoints crash-safe: SpeechBrain's checkpointer
writes ``CKPT.yaml`` first and the parameter files after it, so a run killed while
saving leaves a folder that looks complete and fails to load; here a checkpoint is
written in a staging folder and renamed into place, and a checkpoint whose deletion
was interrupted is never loaded.

:func:`init_from_checkpoint` starts a training stage from the best checkpoint of the
previous one (a LoRA backbone loads into a plain one by merging the adapters).
"""

import logging
import os
import pathlib
import shutil

from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    torch_patched_state_dict_load,
)
from speechbrain.utils.distributed import (
    ddp_barrier,
    ddp_broadcast,
    if_main_process,
)
from speechbrain.utils.logger import get_logger
from torch.nn.parallel import DataParallel, DistributedDataParallel

from speechbrain_w2vbert_sv.utils import fsync_path, read_yaml

logger = get_logger(__name__)

# Metrics that select the best checkpoint, in order of preference (lower is better).
SELECTION_KEYS = ("EER", "dev_error")


class AtomicCheckpointer(Checkpointer):
    """A SpeechBrain ``Checkpointer`` whose checkpoints appear whole or not at all.

    Each checkpoint is saved in ``<checkpoints_dir>/.staging/``, synced to disk, and
    renamed into place (an atomic step); its ``CKPT.yaml`` lists its files, and a
    checkpoint missing one of them (a deletion cut short) is ignored and cleaned up.
    Arguments are those of SpeechBrain's ``Checkpointer``.

    Example
    -------
    >>> import torch
    >>> folder = getfixture("tmp_path")
    >>> layer = torch.nn.Linear(2, 2)
    >>> checkpointer = AtomicCheckpointer(folder, {"layer": layer})
    >>> ckpt = checkpointer.save_checkpoint(meta={"EER": 0.1})
    >>> sorted(p.name for p in ckpt.path.iterdir())
    ['CKPT.yaml', 'layer.ckpt']
    >>> (ckpt.path / "layer.ckpt").unlink()  # as if a deletion was cut short
    >>> checkpointer.list_checkpoints()
    []
    """

    STAGING = ".staging"
    FILES_KEY = "files"

    def _staging_dir(self):
        return pathlib.Path(self.checkpoints_dir) / self.STAGING

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Saves a checkpoint atomically (see the class docstring and the parent's)."""
        final = None
        if if_main_process():
            # Leftovers of a save or a deletion that was killed (the other processes
            # wait at the broadcast below, so nothing else reads the folder now).
            shutil.rmtree(self._staging_dir(), ignore_errors=True)
            incomplete = [c.path for c in super().list_checkpoints() if not self._is_complete(c)]
            checkpoints_dir = pathlib.Path(self.checkpoints_dir)
            if checkpoints_dir.is_dir():
                incomplete += [  # CKPT.yaml already deleted
                    d
                    for d in checkpoints_dir.glob(f"{CKPT_PREFIX}*")
                    if d.is_dir() and not (d / METAFNAME).exists()
                ]
            for path in incomplete:
                logger.warning("Removing incomplete checkpoint %s", path)
                self._discard(path)
            final = (
                self._new_checkpoint_dirpath()
                if name is None
                else self._custom_checkpoint_dirpath(name)
            )
        final = ddp_broadcast(final, src=0)
        files = sorted(f"{key}{PARAMFILE_EXT}" for key in self.recoverables)
        # The parent writes into <checkpoints_dir>/CKPT+<name>: point it at staging.
        checkpoints_dir = self.checkpoints_dir
        self.checkpoints_dir = self._staging_dir()
        try:
            staged = super().save_checkpoint(
                meta={**meta, self.FILES_KEY: files},
                end_of_epoch=end_of_epoch,
                name=final.name[len(CKPT_PREFIX) + 1 :],
                verbosity=logging.DEBUG,
            )
        finally:
            self.checkpoints_dir = checkpoints_dir
        ddp_barrier()  # every process has written its files
        if not if_main_process():
            return None
        missing = [f for f in files + [METAFNAME] if not (staged.path / f).is_file()]
        if missing:
            raise RuntimeError(f"checkpoint {staged.path} lacks {missing} after saving")
        for f in files + [METAFNAME]:
            fsync_path(staged.path / f)
        if final.exists():  # a custom name saved again: replace the old one
            self._discard(final)
        os.rename(staged.path, final)
        fsync_path(final.parent)
        logger.log(
            verbosity,
            f"Saved an {'end-of-epoch' if end_of_epoch else 'intra-epoch'} checkpoint in {final}",
        )
        paramfiles = {key: final / path.name for key, path in staged.paramfiles.items()}
        return Checkpoint(final, staged.meta, paramfiles)

    def _discard(self, path):
        """Removes a checkpoint folder: first out of sight (atomic rename), then its files."""
        trash = self._staging_dir() / f"deleted-{path.name}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, trash)
        shutil.rmtree(trash)

    def _is_complete(self, ckpt):
        files = ckpt.meta.get(self.FILES_KEY)
        # Checkpoints of a plain Checkpointer have no file list: taken as they are.
        return files is None or all((ckpt.path / f).is_file() for f in files)

    def list_checkpoints(self):
        """Checkpoints whose files are all present (see the class docstring)."""
        return [ckpt for ckpt in super().list_checkpoints() if self._is_complete(ckpt)]


def best_checkpoint(checkpointer, keys=SELECTION_KEYS):
    """The checkpoint with the lowest value of the first key any checkpoint has.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        Where to look.
    keys : sequence of str
        Meta keys in order of preference (lower is better); with none present the
        most recent checkpoint is returned.

    Returns
    -------
    speechbrain.utils.checkpoints.Checkpoint or None
    """
    for key in keys:
        ckpt = checkpointer.find_checkpoint(min_key=key)
        if ckpt is not None:
            return ckpt
    return checkpointer.find_checkpoint()


def run_save_folder(source):
    """The checkpoint folder of a training run given its output folder or that folder.

    Arguments
    ---------
    source : str or os.PathLike
        A run's output folder (holding ``save/``) or its ``save`` folder.

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> run = getfixture("tmp_path")
    >>> (run / "save").mkdir()
    >>> run_save_folder(run) == run_save_folder(run / "save") == run / "save"
    True
    """
    folder = pathlib.Path(source)
    if (folder / "save").is_dir():
        folder = folder / "save"
    if not folder.is_dir():
        raise ValueError(f"{source} is not a folder")
    return folder


def is_exported_folder(folder):
    """Whether a folder is an exported (or imported) model: ``hyperparams.yaml`` and
    ``embedding_model.ckpt``, no checkpoints.

    Arguments
    ---------
    folder : str or os.PathLike

    Returns
    -------
    bool
    """
    folder = pathlib.Path(folder)
    return (
        (folder / "hyperparams.yaml").is_file()
        and (folder / "embedding_model.ckpt").is_file()
        and not (folder / "CKPT.yaml").is_file()
        and not (folder / "save").is_dir()
    )


def _init_from_exported(folder, modules):
    """``init_from_checkpoint`` of an exported folder: only the embedding model is
    there; the other modules (the classifier) start fresh."""
    weights = folder / "embedding_model.ckpt"
    if "embedding_model" not in modules:
        raise ValueError(f"init_from: {folder} is an exported model: it holds embedding_model only")
    model = modules["embedding_model"]
    pooling = getattr(getattr(model, "head", None), "pooling", None)
    section = read_yaml(folder / "hyperparams.yaml").get("model") or {}
    # Folders exported before the setting existed pooled with MFAHead's default.
    eps = float(section.get("pooling_eps", 1e-6))
    if pooling is not None and getattr(pooling, "eps", eps) != eps:
        raise ValueError(
            f"init_from: {folder} pools with a variance floor of {eps:g}, this configuration "
            f"with {pooling.eps:g}: set pooling_eps: {eps:g} (e.g. --pooling_eps={eps:g})"
        )
    state = torch_patched_state_dict_load(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"init_from: {weights} does not fit the embedding_model of this configuration: {error}"
        ) from None
    fresh = [name for name in modules if name != "embedding_model"]
    logger.info(
        "Initialised embedding_model from the exported model %s%s",
        folder,
        f"; {', '.join(fresh)} start fresh" if fresh else "",
    )
    return Checkpoint(folder, {}, {"embedding_model": weights})


def init_from_checkpoint(source, modules, keys=SELECTION_KEYS):
    """Loads modules from the best checkpoint of a previous training run, or the
    embedding model of an exported or imported model folder (the other modules, e.g.
    the classifier, then start fresh).

    A backbone saved with LoRA adapters loads into a backbone without them by
    merging the adapters (see ``W2VBertBackbone``), which is how stage 2 starts
    from stage 1. Loading is strict: every parameter must fit.

    Arguments
    ---------
    source : str or os.PathLike
        The previous run's output folder (holding ``save/``), its checkpoint folder, or
        an exported model folder (``hyperparams.yaml`` + ``embedding_model.ckpt``).
    modules : dict
        Recoverable name (as in the previous run's checkpoints, e.g.
        ``embedding_model``, ``classifier``) -> module to load into.
    keys : sequence of str
        Metrics choosing the best checkpoint (see :func:`best_checkpoint`).

    Returns
    -------
    speechbrain.utils.checkpoints.Checkpoint
        The checkpoint loaded.

    Raises
    ------
    ValueError
        No checkpoint in ``source``, a module missing from it, or one that does not fit.
    """
    if is_exported_folder(source):
        return _init_from_exported(pathlib.Path(source), modules)
    folder = run_save_folder(source)
    ckpt = best_checkpoint(AtomicCheckpointer(folder), keys)
    if ckpt is None:
        raise ValueError(f"init_from: no checkpoint found in {folder}")
    for name, module in modules.items():
        if name not in ckpt.paramfiles:
            raise ValueError(f"init_from: checkpoint {ckpt.path} has no {name}{PARAMFILE_EXT}")
        state = torch_patched_state_dict_load(ckpt.paramfiles[name])
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(
                f"init_from: {ckpt.paramfiles[name]} does not fit the {name} of this "
                f"configuration: {error}"
            ) from None
    logger.info("Initialised %s from %s", ", ".join(modules), ckpt.path)
    return ckpt


def unwrap_module(module):
    """The module inside a DDP/DP wrapper (or the module itself)."""
    if isinstance(module, (DistributedDataParallel, DataParallel)):
        return module.module
    return module
