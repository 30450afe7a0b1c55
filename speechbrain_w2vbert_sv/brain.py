"""Training of speaker embedding models with AAM softmax, the SpeechBrain way.

:class:`SpeakerBrain` trains any :class:`~speechbrain_w2vbert_sv.embedding_model.
SpeakerEmbeddingModel` with a cosine classifier: one optimizer for the backbone and
one for everything else (SpeechBrain clips only the first parameter group of each
optimizer, so each learning rate gets its own optimizer), a per-step learning-rate
schedule (:class:`WarmupDecaySchedule`), validation by EER on a trial list at the
end of every epoch, and checkpoints that keep the best model by dev EER.

:class:`AtomicCheckpointer` makes checkpoints crash-safe: SpeechBrain's checkpointer
writes ``CKPT.yaml`` first and the parameter files after it, so a run killed while
saving leaves a folder that looks complete and fails to load; here a checkpoint is
written in a staging folder and renamed into place, and a checkpoint whose deletion
was interrupted is never loaded.

:func:`init_from_checkpoint` starts a training stage from the best checkpoint of the
previous one (a LoRA backbone loads into a plain one by merging the adapters).
"""

import logging
import math
import os
import pathlib
import shutil

import torch
import yaml
from torch.nn.parallel import DataParallel, DistributedDataParallel
from torch.utils.data import DistributedSampler

import speechbrain as sb
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
    torch_patched_state_dict_load,
)
from speechbrain.utils.distributed import (
    ddp_barrier,
    ddp_broadcast,
    if_main_process,
    is_distributed_initialized,
)

from speechbrain_w2vbert_sv.data.corpus import path_to_id
from speechbrain_w2vbert_sv.data.pipeline import random_batch_crop
from speechbrain_w2vbert_sv.metrics import verification_metrics
from speechbrain_w2vbert_sv.scoring import Trials, cosine_scores

logger = logging.getLogger(__name__)

# Metrics that select the best checkpoint, in order of preference (lower is better).
SELECTION_KEYS = ("EER", "dev_error")


@register_checkpoint_hooks
class WarmupDecaySchedule:
    """Learning-rate factor per optimizer step: linear warm-up, then step or cosine decay.

    Written here because SpeechBrain's schedulers either count epochs (so no smooth
    per-step warm-up) or count steps with no epoch milestones and no cosine to a
    floor. Every optimizer's learning rate is its initial one times the factor, so
    one schedule drives the backbone and head optimizers alike. The schedule is a
    checkpoint recoverable (it stores the number of steps taken).

    Arguments
    ---------
    warmup_epochs : float
        Length of the linear warm-up from 0 to the full learning rate.
    decay : str
        ``"step"`` (times ``gamma`` at each milestone), ``"cosine"`` (from 1 to
        ``final_factor`` over the epochs after the warm-up) or ``"none"``.
    milestones : list of float
        Epochs after which the rate is multiplied by ``gamma`` (``"step"``).
    gamma : float
        Factor applied at each milestone.
    total_epochs : float, optional
        Length of the training (needed by ``"cosine"``).
    final_factor : float
        Factor reached at the end of a cosine decay.

    Example
    -------
    >>> schedule = WarmupDecaySchedule(warmup_epochs=1, milestones=[2], gamma=0.1)
    >>> schedule.steps_per_epoch = 4
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> [round(schedule([opt]), 2) for _ in range(12)]
    [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]
    >>> cosine = WarmupDecaySchedule(decay="cosine", total_epochs=2, final_factor=0.5)
    >>> [round(cosine.factor(e), 3) for e in (0, 1, 2)]
    [1.0, 0.75, 0.5]
    """

    def __init__(
        self,
        warmup_epochs=0.0,
        decay="step",
        milestones=(),
        gamma=0.1,
        total_epochs=None,
        final_factor=0.0,
    ):
        if decay not in ("step", "cosine", "none"):
            raise ValueError(f"decay must be 'step', 'cosine' or 'none', got {decay!r}")
        if decay == "cosine" and total_epochs is None:
            raise ValueError("a cosine decay needs total_epochs")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.warmup_epochs = float(warmup_epochs)
        self.decay = decay
        self.milestones = sorted(float(m) for m in milestones)
        self.gamma = float(gamma)
        self.total_epochs = None if total_epochs is None else float(total_epochs)
        self.final_factor = float(final_factor)
        self.n_steps = 0
        # Set by the Brain when the training loader is built (it depends on the data).
        self.steps_per_epoch = None

    def factor(self, epochs):
        """Learning-rate factor after a (fractional) number of epochs, warm-up aside.

        Arguments
        ---------
        epochs : float
            Epochs of training done.

        Returns
        -------
        float
        """
        if self.decay == "step":
            return self.gamma ** sum(epochs >= m for m in self.milestones)
        if self.decay == "cosine":
            span = self.total_epochs - self.warmup_epochs
            progress = min(1.0, max(0.0, epochs - self.warmup_epochs) / span) if span > 0 else 1.0
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            return self.final_factor + (1.0 - self.final_factor) * cosine
        return 1.0

    def __call__(self, optimizers):
        """Sets the learning rates of the coming optimizer step and counts the step.

        Arguments
        ---------
        optimizers : iterable of torch.optim.Optimizer
            Their groups' ``initial_lr`` (set from ``lr`` on first use) is scaled.

        Returns
        -------
        float
            The factor applied.
        """
        if not self.steps_per_epoch:
            raise RuntimeError("WarmupDecaySchedule.steps_per_epoch must be set before use")
        epochs = self.n_steps / self.steps_per_epoch
        factor = self.factor(epochs)
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        if self.n_steps < warmup_steps:
            factor *= (self.n_steps + 1) / warmup_steps
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factor
        self.n_steps += 1
        return factor

    @mark_as_saver
    def _save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump({"n_steps": self.n_steps}, f)

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        del end_of_epoch  # the step count is exact either way
        with open(path, encoding="utf-8") as f:
            self.n_steps = int(yaml.safe_load(f)["n_steps"])


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointer(Checkpointer):
    """A SpeechBrain ``Checkpointer`` whose checkpoints appear whole or not at all.

    Each checkpoint is saved in ``<checkpoints_dir>/.staging/``, synced to disk, and
    renamed into place (an atomic step); its ``CKPT.yaml`` lists its files, and a
    checkpoint missing one of them (a deletion cut short) is ignored and cleaned up.
    Arguments are those of SpeechBrain's ``Checkpointer``.

    Example
    -------
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
            _fsync(staged.path / f)
        if final.exists():  # a custom name saved again: replace the old one
            self._discard(final)
        os.rename(staged.path, final)
        _fsync(final.parent)
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


def init_from_checkpoint(source, modules, keys=SELECTION_KEYS):
    """Loads modules from the best checkpoint of a previous training run.

    A backbone saved with LoRA adapters loads into a backbone without them by
    merging the adapters (see ``W2VBertBackbone``), which is how stage 2 starts
    from stage 1. Loading is strict: every parameter must fit.

    Arguments
    ---------
    source : str or os.PathLike
        The previous run's output folder (holding ``save/``) or its checkpoint folder.
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


def _unwrap(module):
    """The module inside a DDP/DP wrapper (or the module itself)."""
    if isinstance(module, (DistributedDataParallel, DataParallel)):
        return module.module
    return module


class SpeakerBrain(sb.Brain):
    """AAM-softmax training of a speaker embedding model, validated by EER.

    Modules: ``embedding_model`` (waveforms -> ``[B, 1, E]``, with a ``backbone``
    attribute) and ``classifier`` (embeddings -> cosine logits ``[B, 1, N]``).
    Hparams: ``compute_cost`` (e.g. :class:`~speechbrain_w2vbert_sv.losses.
    AAMSoftmaxLoss`), ``backbone_opt_class`` and ``head_opt_class`` (optimizer
    factories taking a parameter list; the backbone one is skipped when nothing in
    the backbone trains; LoRA adapters belong to the backbone), optional ``augment``
    (``(wavs, wav_lens) -> wavs``, training only), optional ``crop_seconds`` (a
    ``[shortest, longest]`` range cuts each training batch to a random length, see
    :func:`~speechbrain_w2vbert_sv.data.pipeline.random_batch_crop`; needs
    ``sample_rate``), ``lr_schedule``
    (:class:`WarmupDecaySchedule`), ``epoch_counter`` and ``train_logger``.

    Training batches hold ``sig`` and ``spk_label``; validation and test batches hold
    ``id`` and ``sig`` of whole utterances, whose embeddings are scored on the trial
    lists at the end of the stage. Under DDP the evaluation is sharded across the
    processes and gathered.

    Arguments
    ---------
    *args, **kwargs
        Those of ``speechbrain.Brain``.
    dev_trials : speechbrain_w2vbert_sv.scoring.Trials, optional
        Trial list scored after each epoch (utterances are mapped to dataset IDs by
        ``path_to_id``); its EER selects the best checkpoint.
    test_trials : dict, optional
        Name -> Trials scored by ``evaluate``.
    dev_labels : dict, optional
        Validation utterance ID -> class index, for a validation classification error.

    Example
    -------
    >>> from speechbrain.dataio.batch import PaddedBatch
    >>> from speechbrain.lobes.models.ECAPA_TDNN import Classifier
    >>> from speechbrain_w2vbert_sv.losses import AAMSoftmaxLoss
    >>> class Model(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.backbone = torch.nn.Linear(400, 8)
    ...     def forward(self, wavs, lens):
    ...         return self.backbone(wavs.unfold(1, 400, 400)).mean(1, keepdim=True)
    >>> classifier = Classifier(8, lin_blocks=0, out_neurons=2)
    >>> brain = SpeakerBrain(
    ...     modules={"embedding_model": Model(), "classifier": classifier},
    ...     hparams={"compute_cost": AAMSoftmaxLoss(),
    ...              "backbone_opt_class": lambda p: torch.optim.AdamW(p, lr=1e-3),
    ...              "head_opt_class": lambda p: torch.optim.AdamW(p, lr=1e-3)},
    ...     run_opts={"noprogressbar": True},
    ... )
    >>> batch = PaddedBatch([{"id": "a", "sig": torch.randn(800), "spk_label": torch.tensor([1])}])
    >>> brain.init_optimizers()
    >>> sorted(brain.optimizers_dict)
    ['backbone_optimizer', 'head_optimizer']
    >>> float(brain.fit_batch(batch)) > 0
    True
    """

    def __init__(self, *args, dev_trials=None, test_trials=None, dev_labels=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dev_trials = dev_trials
        self.test_trials = dict(test_trials or {})
        self.dev_labels = dict(dev_labels or {})
        self.has_valid = False
        self.batches_per_epoch = None
        self.test_results = {}
        self._reset_stats()

    # ------------------------------------------------------------------ forward
    def compute_forward(self, batch, stage):
        """Embeddings and cosine logits; waveforms are augmented in training."""
        embedding_model = self.modules.embedding_model
        classifier = self.modules.classifier
        if stage == sb.Stage.TRAIN:
            wavs, wav_lens = self.training_waveforms(batch)
        else:
            batch = batch.to(self.device)
            wavs, wav_lens = batch.sig
            # Plain modules in evaluation: a DDP forward may start collectives
            # (buffer broadcasts) that the sharded evaluation does not match.
            embedding_model = _unwrap(embedding_model)
            classifier = _unwrap(classifier)
        embeddings = embedding_model(wavs, wav_lens)
        return embeddings, classifier(embeddings)

    def training_waveforms(self, batch):
        """A training batch's waveforms on the device: cut to a random length of the
        ``crop_seconds`` range (if one is given), then augmented.

        Arguments
        ---------
        batch : speechbrain.dataio.batch.PaddedBatch
            Training batch with ``sig``.

        Returns
        -------
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor
            ``[batch]`` relative lengths.
        """
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        crop_seconds = getattr(self.hparams, "crop_seconds", None)
        if crop_seconds is not None:
            wavs = random_batch_crop(wavs, crop_seconds, self.hparams.sample_rate)
        augment = getattr(self.hparams, "augment", None)
        if augment is not None:
            wavs = augment(wavs, wav_lens)
        return wavs, wav_lens

    def compute_objectives(self, predictions, batch, stage):
        """AAM loss in training; in evaluation, collects embeddings (loss 0)."""
        embeddings, cosine = predictions
        predicted = cosine.detach().reshape(cosine.shape[0], -1).argmax(dim=-1)
        if stage == sb.Stage.TRAIN:
            targets = batch.spk_label.data
            self.train_errors += int((predicted != targets.reshape(-1)).sum())
            self.train_count += targets.shape[0]
            return self.hparams.compute_cost(cosine, targets)
        for utt_id, embedding, label in zip(batch.id, embeddings, predicted.tolist()):
            self.embeddings[utt_id] = embedding.detach().float().reshape(-1).cpu()
            if utt_id in self.dev_labels:
                self.dev_errors[utt_id] = float(label != self.dev_labels[utt_id])
        return torch.zeros((), device=self.device)

    # --------------------------------------------------------------- optimizers
    def init_optimizers(self):
        """One optimizer for the trainable backbone parameters, one for the rest."""
        backbone = _unwrap(self.modules["embedding_model"]).backbone
        backbone_ids = {id(p) for p in backbone.parameters()}
        groups = {
            "backbone_optimizer": (
                [p for p in backbone.parameters() if p.requires_grad],
                self.hparams.backbone_opt_class,
            ),
            "head_optimizer": (
                [
                    p
                    for p in self.modules.parameters()
                    if p.requires_grad and id(p) not in backbone_ids
                ],
                self.hparams.head_opt_class,
            ),
        }
        self.optimizers_dict = {}
        for name, (params, opt_class) in groups.items():
            if not params:
                continue
            self.optimizers_dict[name] = opt_class(params)
            if self.checkpointer is not None:
                self.checkpointer.add_recoverable(name, self.optimizers_dict[name])
        if not self.optimizers_dict:
            raise ValueError("nothing to train: every parameter has requires_grad=False")

    def on_fit_batch_start(self, batch, should_step):
        """Sets the learning rates of the optimizer step this batch ends with."""
        schedule = getattr(self.hparams, "lr_schedule", None)
        if should_step and schedule is not None:
            schedule(self.optimizers_dict.values())

    def _wrap_distributed(self):
        """DDP as in SpeechBrain, but SyncBatchNorm only on GPUs (it rejects CPU input)."""
        if not self.distributed_launch or self.device_type == "cuda":
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DistributedDataParallel(
                    module, find_unused_parameters=self.find_unused_parameters
                )

    # ------------------------------------------------------------------ loops
    def fit(self, epoch_counter, train_set, valid_set=None, **kwargs):
        """``Brain.fit``; without a validation set, checkpoints follow each epoch."""
        self.has_valid = valid_set is not None
        return super().fit(epoch_counter, train_set, valid_set, **kwargs)

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """Adds evaluation sharding under DDP and records the epoch length."""
        if (
            stage != sb.Stage.TRAIN
            and self.distributed_launch
            and "sampler" not in loader_kwargs
            and "batch_sampler" not in loader_kwargs
        ):
            # Padded with repeats to equal shards; repeats only overwrite embeddings.
            loader_kwargs["sampler"] = DistributedSampler(dataset, shuffle=False)
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        if stage == sb.Stage.TRAIN:
            self.batches_per_epoch = len(loader)
        return loader

    def on_fit_start(self):
        """Builds the optimizers, resumes, and tells the schedule the epoch length."""
        super().on_fit_start()
        schedule = getattr(self.hparams, "lr_schedule", None)
        if schedule is not None:
            if self.batches_per_epoch is None:
                raise RuntimeError("pass a Dataset (not a DataLoader) to SpeakerBrain.fit")
            schedule.steps_per_epoch = max(
                1, self.batches_per_epoch // self.grad_accumulation_factor
            )

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Loads the best checkpoint (lowest dev EER) before the test."""
        if self.checkpointer is not None:
            keys = SELECTION_KEYS if min_key is None else (min_key,)
            ckpt = best_checkpoint(self.checkpointer, keys)
            if ckpt is not None:
                self.checkpointer.load_checkpoint(ckpt)

    def _reset_stats(self):
        self.train_errors = 0
        self.train_count = 0
        self.embeddings = {}
        self.dev_errors = {}

    def on_stage_start(self, stage, epoch=None):
        """Resets the statistics of the stage."""
        self._reset_stats()
        if stage != sb.Stage.TRAIN and is_distributed_initialized():
            # Same batch-norm statistics on every process before a sharded evaluation.
            for module in self.modules.values():
                for buffer in _unwrap(module).buffers():
                    torch.distributed.broadcast(buffer, src=0)

    def _gather(self):
        """Merges the evaluation outputs of every process (DDP)."""
        if not is_distributed_initialized():
            return
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, (self.embeddings, self.dev_errors))
        for embeddings, dev_errors in gathered:
            self.embeddings.update(embeddings)
            self.dev_errors.update(dev_errors)

    def score_trials(self, trials):
        """Cosine scores and metrics of a trial list from the collected embeddings.

        Trials whose utterances have no embedding (files left out by the data
        preparation) are dropped with a warning.

        Arguments
        ---------
        trials : speechbrain_w2vbert_sv.scoring.Trials
            The trial list.

        Returns
        -------
        dict
            ``EER`` and ``minDCF`` (p_target 0.01), in percent and absolute, plus
            the trial counts.
        """
        have = [path_to_id(utt) in self.embeddings for utt in trials.utterances]
        kept = [have[e] and have[t] for e, t in zip(trials.enroll_index, trials.test_index)]
        if not all(kept):
            logger.warning(
                "%s: %d of %d trials dropped (utterances without an embedding)",
                trials.source,
                len(kept) - sum(kept),
                len(kept),
            )
            trials = Trials.from_lists(
                [l for l, k in zip(trials.labels, kept) if k],
                [u for u, k in zip(trials.enroll_ids, kept) if k],
                [u for u, k in zip(trials.test_ids, kept) if k],
                source=trials.source,
            )
        table = {utt: self.embeddings[path_to_id(utt)] for utt in trials.utterances}
        scores = cosine_scores(trials, table)
        metrics = verification_metrics(scores, trials.labels, p_targets=(0.01,))
        return {
            "EER": 100.0 * metrics["eer"],
            "minDCF": metrics["min_dcf@0.01"],
            "target_trials": metrics["n_target"],
            "nontarget_trials": metrics["n_nontarget"],
        }

    def _learning_rates(self):
        return {
            name.replace("optimizer", "lr"): opt.param_groups[0]["lr"]
            for name, opt in (self.optimizers_dict or {}).items()
        }

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the stage; validation scores the dev trials and saves a checkpoint."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {
                "loss": stage_loss,
                "error": self.train_errors / max(1, self.train_count),
            }
            if not self.has_valid:
                self._end_of_epoch(epoch, {})
            return
        self._gather()
        if stage == sb.Stage.VALID:
            stats = {}
            if self.dev_trials is not None:
                dev = self.score_trials(self.dev_trials)
                stats.update(EER=dev["EER"], minDCF=dev["minDCF"])
            if self.dev_errors:
                stats["dev_error"] = sum(self.dev_errors.values()) / len(self.dev_errors)
            self._end_of_epoch(epoch, stats)
            return
        self.test_results = {
            name: self.score_trials(trials) for name, trials in self.test_trials.items()
        }
        for name, result in self.test_results.items():
            self.hparams.train_logger.log_stats(stats_meta={"trial list": name}, test_stats=result)
            if if_main_process():
                print(
                    f"{name}: EER {result['EER']:.2f}% minDCF(0.01) {result['minDCF']:.4f} "
                    f"({result['target_trials']} target / {result['nontarget_trials']} "
                    "non-target trials)",
                    flush=True,
                )

    def _end_of_epoch(self, epoch, valid_stats):
        """Logs the epoch and saves its checkpoint, keeping the latest and the best."""
        self.hparams.train_logger.log_stats(
            stats_meta={"epoch": epoch, **self._learning_rates()},
            train_stats=self.train_stats,
            valid_stats=valid_stats or None,
        )
        if self.checkpointer is None:
            return
        key = next((k for k in SELECTION_KEYS if k in valid_stats), None)
        self.checkpointer.save_and_keep_only(
            meta={k: float(v) for k, v in valid_stats.items()},
            min_keys=[key] if key else None,
            importance_keys=[],
        )
