"""Knowledge-distillation-guided structured pruning of a w2v-BERT speaker encoder.

:class:`PruningDistillationBrain` trains a student encoder to reproduce every hidden
state of a frozen teacher (a trained speaker model's backbone): the loss is the L1
distance plus the cosine distance, averaged over all ``L + 1`` hidden states and the
valid frames (:func:`~speechbrain_w2vbert_sv.training.asr_distillation.feature_distillation_loss`).

- With pruning (the student is a :class:`~speechbrain_w2vbert_sv.pruning.
  GatedWav2Vec2Bert`), the Lagrangian sparsity term of a
  :class:`~speechbrain_w2vbert_sv.pruning.LagrangianSparsityController` is added; its
  target ramps linearly to the final sparsity over the controller's ``warmup_steps``
  optimizer steps. Three optimizers: the student's weights, the gates and the
  multipliers (SpeechBrain clips only the first parameter group of each optimizer,
  so each learning rate gets an optimizer of its own).
- Without pruning (a plain, e.g. materialised, student), the same distillation
  alone, with the weights' optimizer only.

The teacher lives in the hyperparameters, not in ``modules``: it is neither
optimised, nor checkpointed, nor wrapped in DDP.

Example
-------
>>> import copy
>>> from speechbrain.dataio.batch import PaddedBatch
>>> from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
>>> from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank
>>> from speechbrain_w2vbert_sv.pruning import GatedWav2Vec2Bert, LagrangianSparsityController
>>> teacher = W2VBertBackbone(config={"hidden_size": 16, "num_hidden_layers": 2,
...     "num_attention_heads": 4, "intermediate_size": 32, "conv_depthwise_kernel_size": 3})
>>> student = GatedWav2Vec2Bert(copy.deepcopy(teacher.model))
>>> brain = PruningDistillationBrain(
...     modules={"student": student,
...              "controller": LagrangianSparsityController(0.5, warmup_steps=10)},
...     hparams={"teacher_encoder": teacher,
...              "frontend": W2VBertFbank(),
...              "weights_opt_class": lambda p: torch.optim.AdamW(p, lr=2e-4),
...              "gates_opt_class": lambda p: torch.optim.AdamW(p, lr=2e-2),
...              "lambdas_opt_class": lambda p: torch.optim.AdamW(p, lr=2e-2)},
...     run_opts={"noprogressbar": True},
... )
>>> brain.init_optimizers()
>>> sorted(brain.optimizers_dict)
['gates_optimizer', 'lambdas_optimizer', 'weights_optimizer']
>>> batch = PaddedBatch([{"id": "a", "sig": torch.randn(3200)},
...                      {"id": "b", "sig": torch.randn(2400)}])
>>> float(brain.fit_batch(batch)) > 0
True
"""

import speechbrain as sb
import torch

from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import encoder_hidden_states
from speechbrain_w2vbert_sv.pruning import GatedWav2Vec2Bert
from speechbrain_w2vbert_sv.training.asr_distillation import feature_distillation_loss
from speechbrain_w2vbert_sv.training.checkpoints import unwrap_module
from speechbrain_w2vbert_sv.training.optimizers import build_optimizers, learning_rates


class PruningDistillationBrain(sb.Brain):
    """Distillation of every hidden state, with or without structured pruning.

    Modules: ``student`` (a ``GatedWav2Vec2Bert`` to prune, or a plain/pruned HF
    model to distil only) and, when pruning, ``controller`` (a
    ``LagrangianSparsityController``). Hparams: ``teacher_encoder`` (``(feats,
    lengths) -> ([L + 1, B, T, D], lengths)`` like ``W2VBertBackbone``; put in eval
    mode without gradients), ``frontend`` (``(wavs, wav_lens) -> (feats, lengths)``,
    no trainable parameters), ``weights_opt_class``, and when pruning
    ``gates_opt_class`` and ``lambdas_opt_class`` (optimizer factories taking a
    parameter list); optional ``train_logger``. Each epoch ends with a checkpoint.

    Training batches hold ``sig`` (waveforms, relative lengths). The Brain's
    ``optimizer_step`` drives the sparsity target (it is checkpointed, so a resumed
    run goes on with the same target).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pruning = isinstance(self.modules["student"], GatedWav2Vec2Bert)
        if self.pruning and "controller" not in self.modules:
            raise ValueError("pruning a GatedWav2Vec2Bert student needs a `controller` module")
        self.hparams.teacher_encoder.eval().requires_grad_(False)
        self._reset_stats()

    def compute_forward(self, batch, stage):
        """Student and teacher hidden states of the batch, and the lengths."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        with torch.no_grad():
            feats, lengths = self.hparams.frontend(wavs, wav_lens)
            teacher, _ = self.hparams.teacher_encoder(feats, lengths)
        return encoder_hidden_states(self.modules["student"], feats, lengths), teacher, lengths

    def compute_objectives(self, predictions, batch, stage):
        """Distillation loss (+ the Lagrangian sparsity term when pruning)."""
        student, teacher, lengths = predictions
        loss = feature_distillation_loss(student, teacher, lengths)
        self.stats["distillation"] += loss.item()
        self.stats["batches"] += 1
        if self.pruning and stage == sb.Stage.TRAIN:
            sparsity = unwrap_module(self.modules["student"]).expected_sparsity()
            loss = loss + self.modules["controller"](sparsity, self.optimizer_step)
            self.stats["expected_sparsity"] = sparsity.detach().item()
        return loss

    def init_optimizers(self):
        """One optimizer each for the weights, the gates and the multipliers."""
        student = unwrap_module(self.modules["student"])
        if self.pruning:
            gates = student.gate_parameters()
            gate_ids = {id(p) for p in gates}
            groups = {
                "weights_optimizer": (
                    [p for p in student.parameters() if id(p) not in gate_ids],
                    self.hparams.weights_opt_class,
                ),
                "gates_optimizer": (gates, self.hparams.gates_opt_class),
                "lambdas_optimizer": (
                    list(unwrap_module(self.modules["controller"]).parameters()),
                    self.hparams.lambdas_opt_class,
                ),
            }
        else:
            groups = {
                "weights_optimizer": (list(student.parameters()), self.hparams.weights_opt_class)
            }
        self.optimizers_dict = build_optimizers(groups, self.checkpointer)

    def _reset_stats(self):
        self.stats = {"distillation": 0.0, "batches": 0}

    def on_stage_start(self, stage, epoch=None):
        """Resets the statistics of the stage."""
        self._reset_stats()

    def summary(self):
        """Current statistics: mean distillation loss of the stage so far and, when
        pruning, expected and deterministic sparsity, target and multipliers.

        Returns
        -------
        dict
        """
        stats = {"distillation": self.stats["distillation"] / max(1, self.stats["batches"])}
        if self.pruning:
            student = unwrap_module(self.modules["student"])
            controller = unwrap_module(self.modules["controller"])
            with torch.no_grad():
                stats.update(
                    expected_sparsity=float(student.expected_sparsity()),
                    sparsity=1.0 - student.deterministic_num_params() / student.original_num_params,
                    target=controller.target(self.optimizer_step),
                    lambda1=float(controller.lambda1),
                    lambda2=float(controller.lambda2),
                )
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the epoch and saves a checkpoint (the latest is kept)."""
        if stage != sb.Stage.TRAIN:
            return
        stats = {"loss": stage_loss, **self.summary()}
        train_logger = getattr(self.hparams, "train_logger", None)
        if train_logger is not None:
            train_logger.log_stats(
                stats_meta={"epoch": epoch, **learning_rates(self.optimizers_dict)},
                train_stats=stats,
            )
        if self.checkpointer is not None:
            self.checkpointer.save_and_keep_only(meta={"loss": float(stage_loss)})
