"""Training of speaker embedding models with AAM softmax, the SpeechBrain way.

:class:`SpeakerBrain` trains any :class:`~speechbrain_w2vbert_sv.lobes.embedding_model.
SpeakerEmbeddingModel` with a cosine classifier: one optimizer for the backbone and
one for everything else (SpeechBrain clips only the first parameter group of each
optimizer, so each learning rate gets its own optimizer), a per-step learning-rate
schedule (:class:`~speechbrain_w2vbert_sv.training.schedules.WarmupDecaySchedule`),
validation by EER on a trial list at the end of every epoch, and checkpoints that keep
the best model by dev EER.
"""

import speechbrain as sb
import torch
from speechbrain.utils.distributed import (
    if_main_process,
    is_distributed_initialized,
)
from speechbrain.utils.logger import get_logger
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from speechbrain_w2vbert_sv.data.csv_io import path_to_id
from speechbrain_w2vbert_sv.data.pipeline import random_batch_crop
from speechbrain_w2vbert_sv.scoring.cosine import cosine_scores
from speechbrain_w2vbert_sv.scoring.metrics import verification_metrics
from speechbrain_w2vbert_sv.training.checkpoints import (
    SELECTION_KEYS,
    best_checkpoint,
    unwrap_module,
)
from speechbrain_w2vbert_sv.training.optimizers import build_optimizers, learning_rates

logger = get_logger(__name__)


class SpeakerBrain(sb.Brain):
    """AAM-softmax training of a speaker embedding model, validated by EER.

    Modules: ``embedding_model`` (waveforms -> ``[B, 1, E]``, with a ``backbone``
    attribute) and ``classifier`` (embeddings -> cosine logits ``[B, 1, N]``).
    Hparams: ``compute_cost`` (e.g. :class:`~speechbrain_w2vbert_sv.lobes.losses.
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
    dev_trials : speechbrain_w2vbert_sv.scoring.trials.Trials, optional
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
    >>> from speechbrain_w2vbert_sv.lobes.losses import AAMSoftmaxLoss
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
            embedding_model = unwrap_module(embedding_model)
            classifier = unwrap_module(classifier)
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
        backbone = unwrap_module(self.modules["embedding_model"]).backbone
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
        self.optimizers_dict = build_optimizers(groups, self.checkpointer)

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
        if isinstance(train_set, DataLoader):  # e.g. the shards' loader
            self.batches_per_epoch = len(train_set)
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
                for buffer in unwrap_module(module).buffers():
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
        trials : speechbrain_w2vbert_sv.scoring.trials.Trials
            The trial list.

        Returns
        -------
        dict
            ``EER`` and ``minDCF`` (p_target 0.01), in percent and absolute, plus
            the trial counts.
        """
        have_file = {f: path_to_id(f) in self.embeddings for f in trials.files}
        # An enrollment model needs all of its utterances.
        have = [all(have_file[f] for f in trials.members(u)) for u in trials.utterances]
        kept = [have[e] and have[t] for e, t in zip(trials.enroll_index, trials.test_index)]
        if not all(kept):
            logger.warning(
                "%s: %d of %d trials dropped (utterances without an embedding)",
                trials.source,
                len(kept) - sum(kept),
                len(kept),
            )
            trials = trials.subset(kept)
        table = {f: self.embeddings[path_to_id(f)] for f in trials.files}
        scores = cosine_scores(trials, table)
        metrics = verification_metrics(scores, trials.labels, p_targets=(0.01,))
        return {
            "EER": 100.0 * metrics["eer"],
            "minDCF": metrics["min_dcf@0.01"],
            "target_trials": metrics["n_target"],
            "nontarget_trials": metrics["n_nontarget"],
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
            stats_meta={"epoch": epoch, **learning_rates(self.optimizers_dict)},
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
