"""Knowledge distillation from an ASR Conformer teacher into a speaker student.

The student (:class:`MultiTaskSpeakerModel`) is a speaker embedding model that also
carries a frame-level CTC output layer on its encoder. It is trained with the speaker
loss (AAM softmax) plus, weighted by ``asr_weight``, an auxiliary ASR loss on that
layer: CTC on the transcripts (``asr_target: transcript``, when the data has a
``words`` column) or the frame-level KL divergence from the teacher's CTC posteriors
(``asr_target: teacher``, the default). Optionally (``feature_weight``) its hidden
states are also pulled towards the teacher's (L1 + cosine distance, as in
DistilHuBERT-style feature distillation).

Choices (the paper publishes no loss weights):

* ``asr_target: teacher``: the speaker recipes train on random crops with speed
  perturbation; a crop that wraps around a short file, or cuts into a word, no longer
  matches its transcript, while the teacher sees the very same audio, so its
  posteriors are always a valid frame-level target. It also needs no transcripts.
* ``asr_weight: 0.5``: the KL of a student initialised from the teacher starts at 0
  and stayed at 0.04-0.08 nats per frame on Arabic Speech Commands, against an AAM
  loss of 4-16 (scale 32): the ASR task regularises the encoder without dominating the
  speaker task (EER 19.8 ± 1.8 % against 20.3 ± 1.3 % for plain transfer over three
  seeds there, a gain within the seed spread; see ``recipes/VoxCeleb/README_conformer.md``).
* ``feature_weight: 0``: feature distillation pins the student's block outputs to
  the ASR teacher's, whose upper blocks are trained to discard speaker information;
  the CTC-posterior loss already keeps the linguistic content in the student, and
  leaves the encoder free to carry the speaker information. Measured there with
  ``feature_weight: 0.5``: EER 17.1 % -> 20.0 % (one seed). The term stays available
  (``feature_weight > 0``; with a student of another width, learned projections map
  its hidden states to the teacher's).

The teacher (a frozen :class:`~speechbrain_w2vbert_sv.lobes.asr_conformer.ConformerCTC`)
lives in the hyperparameters, not in the Brain's modules, so it is neither optimised,
nor checkpointed, nor wrapped in DDP.

Example
-------
>>> teacher = torch.log_softmax(torch.randn(2, 6, 5), dim=-1)
>>> float(ctc_posterior_kl(teacher, teacher, torch.ones(2)))
0.0
"""

import collections

import speechbrain as sb
import torch
from speechbrain.nnet.linear import Linear
from speechbrain.nnet.losses import ctc_loss

from speechbrain_w2vbert_sv.data.ctc_tokens import CTCTokens
from speechbrain_w2vbert_sv.lobes.embedding_model import SpeakerEmbeddingModel
from speechbrain_w2vbert_sv.training.speaker_brain import SpeakerBrain
from speechbrain_w2vbert_sv.utils import lengths_to_mask

MultiTaskOutput = collections.namedtuple(
    "MultiTaskOutput", ["embeddings", "log_probs", "hidden_states", "lengths"]
)
ASR_TARGETS = ("teacher", "transcript")


def match_frames(x, num_frames):
    """Resample a [..., T, D] sequence to ``num_frames`` frames (linear interpolation).

    Lets a student with another frame rate than its teacher be compared with it.

    Arguments
    ---------
    x : torch.Tensor
        [..., T, D].
    num_frames : int
        Frames wanted.

    Returns
    -------
    torch.Tensor
        [..., num_frames, D] (``x`` itself when T already matches).

    Example
    -------
    >>> match_frames(torch.arange(4.0).reshape(1, 2, 2), 3)
    tensor([[[0., 1.],
             [1., 2.],
             [2., 3.]]])
    """
    if x.shape[-2] == num_frames:
        return x
    lead = x.shape[:-2]
    flat = x.reshape(-1, *x.shape[-2:]).transpose(1, 2)
    flat = torch.nn.functional.interpolate(flat, size=num_frames, mode="linear", align_corners=True)
    return flat.transpose(1, 2).reshape(*lead, num_frames, x.shape[-1])


def ctc_posterior_kl(student_log_probs, teacher_log_probs, lengths, temperature=1.0):
    """Frame-level KL(teacher || student) of CTC posteriors, mean over valid frames.

    Arguments
    ---------
    student_log_probs : torch.Tensor
        [B, T, V] log-probabilities of the student.
    teacher_log_probs : torch.Tensor
        [B, T', V] log-probabilities of the teacher (resampled to T frames if T' != T).
    lengths : torch.Tensor
        Relative lengths [B].
    temperature : float
        Softens both distributions (the loss is scaled by its square, as usual).

    Returns
    -------
    torch.Tensor
        Scalar loss (nats per frame).

    Example
    -------
    >>> student = torch.log_softmax(torch.randn(2, 6, 5), dim=-1)
    >>> teacher = torch.log_softmax(torch.randn(2, 6, 5), dim=-1)
    >>> bool(ctc_posterior_kl(student, teacher, torch.tensor([1.0, 0.5])) > 0)
    True
    """
    if student_log_probs.shape[-1] != teacher_log_probs.shape[-1]:
        raise ValueError(
            f"student CTC layer has {student_log_probs.shape[-1]} outputs but the teacher "
            f"{teacher_log_probs.shape[-1]}: the student's vocab_size must be the teacher's"
        )
    num_frames = student_log_probs.shape[1]
    if teacher_log_probs.shape[1] != num_frames:
        teacher_log_probs = match_frames(teacher_log_probs.exp(), num_frames).clamp_min(1e-10).log()
    student = torch.log_softmax(student_log_probs / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_log_probs / temperature, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(dim=-1)  # [B, T]
    mask = lengths_to_mask(lengths, num_frames).to(kl.dtype)
    return (kl * mask).sum() / mask.sum() * temperature**2


def feature_distillation_loss(student_hidden, teacher_hidden, lengths):
    """L1 distance + cosine distance between paired hidden states, over valid frames.

    Arguments
    ---------
    student_hidden : torch.Tensor
        [L, B, T, D] student hidden states (already projected to the teacher's width).
    teacher_hidden : torch.Tensor
        [L, B, T', D] the teacher hidden states they are paired with.
    lengths : torch.Tensor
        Relative lengths [B].

    Returns
    -------
    torch.Tensor
        Scalar loss: mean over layers and frames of ``mean|s - t| + (1 - cos(s, t))``.

    Example
    -------
    >>> x = torch.randn(2, 3, 4, 8)
    >>> float(feature_distillation_loss(x, x, torch.ones(3))) < 1e-6
    True
    """
    teacher_hidden = match_frames(teacher_hidden, student_hidden.shape[2])
    l1 = (student_hidden - teacher_hidden).abs().mean(dim=-1)
    cos = torch.nn.functional.cosine_similarity(student_hidden, teacher_hidden, dim=-1)
    per_frame = l1 + 1.0 - cos  # [L, B, T]
    mask = lengths_to_mask(lengths, student_hidden.shape[2]).to(per_frame.dtype)
    return (per_frame * mask).sum() / (mask.sum() * per_frame.shape[0])


def layer_pairs(num_student, num_teacher):
    """Teacher hidden state paired with each student hidden state (evenly spread).

    Arguments
    ---------
    num_student : int
        Student hidden states (block input + blocks).
    num_teacher : int
        Teacher hidden states.

    Returns
    -------
    list of int
        Teacher index for each student index (first to first, last to last).

    Example
    -------
    >>> layer_pairs(3, 5), layer_pairs(4, 4)
    ([0, 2, 4], [0, 1, 2, 3])
    """
    if num_student == 1:
        return [num_teacher - 1]
    return [round(i * (num_teacher - 1) / (num_student - 1)) for i in range(num_student)]


class MultiTaskSpeakerModel(SpeakerEmbeddingModel):
    """A speaker embedding model with a frame-level CTC output layer on its encoder.

    ``forward(wavs, wav_lens)`` gives the embeddings (the contract of every speaker
    model: extraction, scoring and export use it as any other);
    ``forward(..., multitask=True)`` also gives the CTC log-probabilities and the
    hidden states (projected to the teacher's width when ``teacher_hidden_size``
    differs), through the module's own ``forward`` so that DDP sees it.

    Arguments
    ---------
    frontend : torch.nn.Module
        ``(wavs, wav_lens) -> (features, lengths)``.
    backbone : speechbrain_w2vbert_sv.lobes.conformer_backbone.ConformerBackbone
        Needs ``encode`` (final output and hidden states).
    head : torch.nn.Module
        ``(hidden states, lengths) -> [B, 1, E]``.
    vocab_size : int
        Outputs of the CTC layer (the teacher's, blank included).
    teacher_hidden_size : int, optional
        Width of the teacher's hidden states, if not the student's: adds one learned
        projection per hidden state for the feature distillation.

    Example
    -------
    >>> from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
    >>> from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
    >>> from speechbrain_w2vbert_sv.lobes.heads import MFAHead
    >>> model = MultiTaskSpeakerModel(
    ...     ConformerFbank(n_mels=40),
    ...     ConformerBackbone(n_mels=40, cnn_channels=(8, 8), d_model=32, nhead=4,
    ...                       num_layers=2, d_ffn=64, kernel_size=7),
    ...     MFAHead(3, 32, 4, 4, 8), vocab_size=5, teacher_hidden_size=48)
    >>> out = model(torch.randn(2, 8000), torch.tensor([1.0, 0.5]), multitask=True)
    >>> out.embeddings.shape, out.log_probs.shape, out.hidden_states.shape
    (torch.Size([2, 1, 8]), torch.Size([2, 13, 5]), torch.Size([3, 2, 13, 48]))
    """

    def __init__(self, frontend, backbone, head, vocab_size, teacher_hidden_size=None):
        super().__init__(frontend, backbone, head)
        self.ctc_lin = Linear(input_size=backbone.hidden_size, n_neurons=vocab_size)
        width = backbone.hidden_size
        self.projections = None
        if teacher_hidden_size is not None and teacher_hidden_size != width:
            self.projections = torch.nn.ModuleList(
                torch.nn.Linear(width, teacher_hidden_size)
                for _ in range(backbone.num_hidden_states)
            )

    def forward(self, wavs, wav_lens=None, multitask=False):
        """Embeddings, or (``multitask``) embeddings, CTC log-probs and hidden states.

        Arguments
        ---------
        wavs, wav_lens : torch.Tensor
            Waveforms [B, S] and their relative lengths [B] (optional: all full length).
        multitask : bool
            Also return the ASR outputs.

        Returns
        -------
        torch.Tensor or MultiTaskOutput
            Embeddings [B, 1, E]; or ``embeddings``, ``log_probs`` [B, T, V],
            ``hidden_states`` [L + 1, B, T, D(teacher)] and ``lengths``.
        """
        feats, lengths = self.frontend(wavs, wav_lens)
        out = self.backbone.encode(feats, lengths)
        embeddings = self.head(out.hidden_states, out.lengths)
        if not multitask:
            return embeddings
        log_probs = torch.log_softmax(self.ctc_lin(out.encoder_out), dim=-1)
        hidden = out.hidden_states
        if self.projections is not None:
            hidden = torch.stack([p(h) for p, h in zip(self.projections, hidden)])
        return MultiTaskOutput(embeddings, log_probs, hidden, out.lengths)


class ConformerDistillationBrain(SpeakerBrain):
    """The speaker Brain (:class:`~speechbrain_w2vbert_sv.training.speaker_brain.SpeakerBrain`)
    with ASR-teacher distillation.

    ``embedding_model`` is a :class:`MultiTaskSpeakerModel`. Extra hyperparameters:
    ``teacher`` (a frozen ``ConformerCTC``, not a module), ``asr_weight``,
    ``asr_target`` (``teacher``: KL to the teacher's CTC posteriors; ``transcript``:
    CTC on the ``words`` of the training data, tokenised with the ASR model's
    ``asr_tokens``: its ``label_encoder.txt`` or SentencePiece ``tokenizer.ckpt``, or
    the folder holding one; ``asr_label_encoder_file`` is read as an older name of
    it; a SentencePiece blank is ``blank_index``), ``feature_weight`` and
    ``kd_temperature``. The
    training log gets the mean speaker, ASR and feature losses of each epoch.
    Validation and test are those of ``SpeakerBrain`` (embeddings only).

    Example
    -------
    >>> from speechbrain.dataio.batch import PaddedBatch
    >>> from speechbrain.lobes.models.ECAPA_TDNN import Classifier
    >>> from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
    >>> from speechbrain_w2vbert_sv.lobes.asr_conformer import ConformerCTC
    >>> from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
    >>> from speechbrain_w2vbert_sv.lobes.heads import MFAHead
    >>> from speechbrain_w2vbert_sv.lobes.losses import AAMSoftmaxLoss
    >>> def encoder():
    ...     return ConformerBackbone(n_mels=40, cnn_channels=(8, 8), d_model=32,
    ...                              nhead=4, num_layers=2, d_ffn=64, kernel_size=7)
    >>> student = MultiTaskSpeakerModel(ConformerFbank(n_mels=40), encoder(),
    ...                                 MFAHead(3, 32, 4, 4, 8), vocab_size=5)
    >>> teacher = ConformerCTC(ConformerFbank(n_mels=40), encoder(), 5, freeze=True)
    >>> opt = lambda params: torch.optim.AdamW(params, lr=1e-3)
    >>> brain = ConformerDistillationBrain(
    ...     modules={"embedding_model": student,
    ...              "classifier": Classifier(8, lin_blocks=0, out_neurons=2)},
    ...     hparams={"compute_cost": AAMSoftmaxLoss(), "backbone_opt_class": opt,
    ...              "head_opt_class": opt, "teacher": teacher, "asr_weight": 0.5,
    ...              "feature_weight": 0.1},
    ...     run_opts={"noprogressbar": True})
    >>> brain.init_optimizers()
    >>> batch = PaddedBatch([{"id": "a", "sig": torch.randn(8000),
    ...                       "spk_label": torch.tensor([1])}])
    >>> float(brain.fit_batch(batch)) > 0, sorted(brain.aux_sums)
    (True, ['asr_loss', 'feature_loss', 'speaker_loss'])
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asr_target = getattr(self.hparams, "asr_target", "teacher")
        if self.asr_target not in ASR_TARGETS:
            raise ValueError(f"asr_target must be one of {ASR_TARGETS}, got {self.asr_target!r}")
        teacher = getattr(self.hparams, "teacher", None)
        if teacher is None:
            raise ValueError("ConformerDistillationBrain needs a `teacher` hyperparameter")
        if any(p.requires_grad for p in teacher.parameters()):
            raise ValueError("the teacher must be frozen (ConformerCTC(..., freeze=True))")
        teacher.to(self.device)
        self.tokens = None
        if self.asr_target == "transcript":
            source = getattr(self.hparams, "asr_tokens", None)
            source = source or getattr(self.hparams, "asr_label_encoder_file", None)
            if source is None:
                raise ValueError("asr_target 'transcript' needs asr_tokens (the ASR folder)")
            self.tokens = CTCTokens.from_path(source, getattr(self.hparams, "blank_index", None))
        self.aux_sums, self.aux_steps = {}, 0

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """Adds the ``words`` of the training data to the batches for CTC targets."""
        if stage == sb.Stage.TRAIN and self.asr_target == "transcript":
            keys = list(dataset.pipeline.output_mapping)
            if "words" not in keys:
                first = next(iter(dataset.data.values()))
                if "words" not in first:
                    raise ValueError(
                        "asr_target 'transcript' needs a 'words' column in the training "
                        "CSV (prepare the corpus with transcripts), or use asr_target "
                        "'teacher'"
                    )
                dataset.set_output_keys(keys + ["words"])
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    def compute_forward(self, batch, stage):
        """Training: student multitask outputs, cosine logits and the teacher's outputs."""
        if stage != sb.Stage.TRAIN:
            return super().compute_forward(batch, stage)
        wavs, wav_lens = self.training_waveforms(batch)
        student = self.modules.embedding_model(wavs, wav_lens, multitask=True)
        cosine = self.modules.classifier(student.embeddings)
        with torch.no_grad():
            teacher = self.hparams.teacher(wavs, wav_lens)
        return student, cosine, teacher

    def _transcript_ctc(self, log_probs, lengths, words):
        if len(self.tokens) != log_probs.shape[-1]:
            raise ValueError(
                f"{self.tokens.source} has {len(self.tokens)} tokens but the student's "
                f"CTC layer {log_probs.shape[-1]} outputs"
            )
        tokens = [self.tokens.encode(w) for w in words]
        longest = max(1, max(len(t) for t in tokens))
        targets = torch.zeros(len(tokens), longest, dtype=torch.long)
        for row, seq in zip(targets, tokens):
            row[: len(seq)] = torch.tensor(seq, dtype=torch.long)
        target_lens = torch.tensor([len(t) / longest for t in tokens])
        return ctc_loss(
            log_probs,
            targets.to(log_probs.device),
            lengths,
            target_lens.to(log_probs.device),
            self.tokens.blank_index,
        )

    def compute_objectives(self, predictions, batch, stage):
        """Speaker loss + asr_weight x ASR loss + feature_weight x feature loss."""
        if stage != sb.Stage.TRAIN:
            return super().compute_objectives(predictions, batch, stage)
        student, cosine, teacher = predictions
        losses = {
            "speaker_loss": super().compute_objectives((student.embeddings, cosine), batch, stage)
        }
        weights = {
            "asr_loss": getattr(self.hparams, "asr_weight", 0.5),
            "feature_loss": getattr(self.hparams, "feature_weight", 0.0),
        }
        if weights["asr_loss"] > 0:
            if self.asr_target == "transcript":
                losses["asr_loss"] = self._transcript_ctc(
                    student.log_probs, student.lengths, batch.words
                )
            else:
                losses["asr_loss"] = ctc_posterior_kl(
                    student.log_probs,
                    teacher.log_probs,
                    student.lengths,
                    getattr(self.hparams, "kd_temperature", 1.0),
                )
        if weights["feature_loss"] > 0:
            pairs = layer_pairs(student.hidden_states.shape[0], teacher.hidden_states.shape[0])
            losses["feature_loss"] = feature_distillation_loss(
                student.hidden_states, teacher.hidden_states[pairs], student.lengths
            )
        for name, value in losses.items():
            self.aux_sums[name] = self.aux_sums.get(name, 0.0) + float(value.detach())
        self.aux_steps += 1
        return losses["speaker_loss"] + sum(weights[k] * losses[k] for k in weights if k in losses)

    def on_stage_start(self, stage, epoch=None):
        """Resets the statistics, the loss components included."""
        super().on_stage_start(stage, epoch)
        if stage == sb.Stage.TRAIN:
            self.aux_sums, self.aux_steps = {}, 0

    def _end_of_epoch(self, epoch, valid_stats):
        """Adds the epoch's mean loss components to the logged training statistics."""
        if self.aux_steps:
            self.train_stats.update({k: v / self.aux_steps for k, v in self.aux_sums.items()})
        super()._end_of_epoch(epoch, valid_stats)
