#!/usr/bin/env python3
"""Recipe: prune a trained w2v-BERT speaker model by knowledge distillation.

1. The student (a copy of the teacher's encoder with hard-concrete gates) learns to
   reproduce every hidden state of the frozen teacher while a Lagrangian term drives
   its expected sparsity to ``target_sparsity`` (ramped over ``warmup_steps``).
2. The gates are materialised: ``<output_folder>/pruned/``.
3. The pruned encoder is distilled again, without the sparsity term:
   ``<output_folder>/distilled/``.

Each output folder holds ``encoder/`` (``save_pretrained``), ``save/``: a training
checkpoint (pruned backbone + the teacher's head and classifier) that
``train.py --w2vbert_source=<folder>/encoder --init_from=<folder>`` fine-tunes (see
``hparams/prune.yaml``), and ``hyperparams.yaml`` (the model definition), so that
``w2vbert-sv export --run <folder> --output <export folder>`` exports it as it is
(as it exports a fine-tuning run). To run it::

    python recipes/VoxCeleb/prune.py recipes/VoxCeleb/hparams/prune.yaml \\
        --teacher=results/w2vbert_stage3/1986 --data_folder=/data/vox2_dev_wav

A killed run resumes where it stopped (each phase has its checkpoints).
"""

import copy
import pathlib
import shutil
import sys

try:
    import speechbrain_w2vbert_sv  # noqa: F401
except ImportError:  # run from a source checkout without installation
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import speechbrain as sb
import torch
import yaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from speechbrain_w2vbert_sv.data.pipeline import make_train_dataset
from speechbrain_w2vbert_sv.data.recipe_data import (
    LABEL_ENCODER_FILE,
    prepare_recipe_data,
)
from speechbrain_w2vbert_sv.experiment import start_experiment
from speechbrain_w2vbert_sv.inference.model_yaml import model_settings
from speechbrain_w2vbert_sv.lobes.embedding_model import SpeakerEmbeddingModel
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import EncoderSourceError, W2VBertBackbone
from speechbrain_w2vbert_sv.pruning import count_encoder_macs
from speechbrain_w2vbert_sv.pruning.distillation import PruningDistillationBrain
from speechbrain_w2vbert_sv.training.checkpoints import (
    AtomicCheckpointer,
    init_from_checkpoint,
    is_exported_folder,
    run_save_folder,
)
from speechbrain_w2vbert_sv.utils import count_parameters


def encoder_size(model):
    """Parameters and MACs (1 s of speech) of an encoder, as a dict."""
    params = count_parameters(model, exclude=("masked_spec_embed",))
    return {"params": params, "GMACs_1s": count_encoder_macs(model, seconds=1.0) / 1e9}


def teacher_settings(output):
    """The teacher's model settings (its size keys), from the run's resolved yaml."""
    return model_settings(pathlib.Path(output) / "hyperparams.yaml")[1]


def export(encoder, teacher_model, teacher_ckpt, make_classifier, folder, settings):
    """Writes ``folder/encoder``, a training checkpoint in ``folder/save`` and
    ``folder/hyperparams.yaml``.

    The checkpoint's ``embedding_model`` is the teacher's with the pruned backbone
    (built from ``folder/encoder`` exactly as the training recipe builds it), its
    ``classifier`` the teacher's; the teacher's label encoder goes along (a teacher
    given as an exported model has neither: the checkpoint then holds the embedding
    model only). The yaml holds ``settings`` (the teacher's model settings) with
    ``w2vbert_source`` set to the encoder folder: what ``w2vbert-sv export --run
    <folder>`` reads.
    """
    folder = pathlib.Path(folder).resolve()
    encoder.save_pretrained(folder / "encoder")
    section = {**settings, "w2vbert_source": "!ref <w2vbert_source>", "w2vbert_config": {}}
    text = yaml.safe_dump({"model": section}, sort_keys=False)
    (folder / "hyperparams.yaml").write_text(
        "# Written by prune.py: the model of this folder (encoder/ + save/), for\n"
        "# `w2vbert-sv export --run <this folder>`; after moving the folder, pass\n"
        "# --override w2vbert_source=<its new place>/encoder.\n"
        f"w2vbert_source: {yaml.safe_dump(str(folder / 'encoder')).splitlines()[0]}\n"
        + text.replace("'!ref <w2vbert_source>'", "!ref <w2vbert_source>"),
        encoding="utf-8",
    )
    model = SpeakerEmbeddingModel(
        frontend=teacher_model.frontend,
        backbone=W2VBertBackbone(source=str(folder / "encoder")),
        head=teacher_model.head,
    )
    recoverables = {"embedding_model": model}
    if "classifier" in teacher_ckpt.paramfiles:
        classifier_state = torch.load(teacher_ckpt.paramfiles["classifier"], map_location="cpu")
        classifier = make_classifier(out_neurons=classifier_state["weight"].shape[0])
        classifier.load_state_dict(classifier_state)
        recoverables["classifier"] = classifier
    save = folder / "save"
    shutil.rmtree(save, ignore_errors=True)
    checkpointer = AtomicCheckpointer(save, recoverables)
    checkpointer.save_checkpoint(meta={"source": str(teacher_ckpt.path)})
    if "classifier" in recoverables:
        shutil.copyfile(teacher_ckpt.path.parent / LABEL_ENCODER_FILE, save / LABEL_ENCODER_FILE)


def main(argv):
    hparams, run_opts = start_experiment(argv, distributed=True)
    output = pathlib.Path(hparams["output_folder"])

    # Distillation data: the training recipe's crops (speaker labels unused).
    run_on_main(prepare_recipe_data, kwargs={"hparams": hparams})
    data = prepare_recipe_data(hparams)
    train_kwargs = {
        "csv_file": data["train"],
        "crop_seconds": hparams["crop_seconds"],
        "speed_perturb": hparams["speed_perturb"],
        "sample_rate": hparams["sample_rate"],
        "label_encoder_file": pathlib.Path(hparams["save_folder"]) / "distillation_labels.txt",
    }
    run_on_main(make_train_dataset, kwargs=train_kwargs)
    train_data = make_train_dataset(**train_kwargs)[0]

    # Teacher: the best checkpoint of its training run; frozen, outside `modules`.
    teacher_model = hparams["embedding_model"]
    # Or an exported/imported model folder: the embedding model only, no classifier.
    teacher_ckpt = init_from_checkpoint(hparams["teacher"], {"embedding_model": teacher_model})
    if not is_exported_folder(hparams["teacher"]):
        if not (run_save_folder(hparams["teacher"]) / LABEL_ENCODER_FILE).is_file():
            raise ValueError(
                f"teacher: {run_save_folder(hparams['teacher'])} has no {LABEL_ENCODER_FILE}"
            )
        if "classifier" not in teacher_ckpt.paramfiles:
            raise ValueError(f"teacher: checkpoint {teacher_ckpt.path} has no classifier.ckpt")
    teacher_model.eval().requires_grad_(False)
    common = {
        **hparams,
        "teacher_encoder": teacher_model.backbone,
        "frontend": teacher_model.frontend,
    }
    loader_kwargs = hparams["train_dataloader_options"]

    # 1. Distillation with pruning.
    gated = hparams["make_gated"](copy.deepcopy(teacher_model.backbone.model))
    gated.model.requires_grad_(True)
    hparams["prune_checkpointer"].add_recoverable("student", gated)
    brain = PruningDistillationBrain(
        modules={"student": gated, "controller": hparams["controller"]},
        hparams=common,
        run_opts=run_opts,
        checkpointer=hparams["prune_checkpointer"],
    )
    teacher_model.to(brain.device)
    brain.fit(hparams["prune_epoch_counter"], train_data, train_loader_kwargs=loader_kwargs)
    summary = {"pruning": brain.summary()}

    # 2. Materialisation.
    gated.eval()
    pruned = gated.materialize()
    summary["teacher_encoder"] = encoder_size(teacher_model.backbone.model)
    summary["pruned_encoder"] = encoder_size(pruned)
    summary["predicted_params"] = gated.deterministic_num_params()
    sizes = summary["pruned_encoder"]["params"], summary["teacher_encoder"]["params"]
    summary["sparsity"] = 1 - sizes[0] / sizes[1]
    if if_main_process():
        export(
            pruned,
            teacher_model,
            teacher_ckpt,
            hparams["make_classifier"],
            output / "pruned",
            teacher_settings(output),
        )
    sb.utils.distributed.ddp_barrier()

    # 3. Distillation of the pruned encoder, without the sparsity term.
    hparams["distill_checkpointer"].add_recoverable("student", pruned)
    brain = PruningDistillationBrain(
        modules={"student": pruned},
        hparams=common,
        run_opts=run_opts,
        checkpointer=hparams["distill_checkpointer"],
    )
    brain.fit(hparams["distill_epoch_counter"], train_data, train_loader_kwargs=loader_kwargs)
    summary["distillation"] = brain.summary()
    if if_main_process():
        export(
            pruned.eval(),
            teacher_model,
            teacher_ckpt,
            hparams["make_classifier"],
            output / "distilled",
            teacher_settings(output),
        )
        with open(output / "pruning_summary.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(summary, f, sort_keys=False)
        print(yaml.safe_dump(summary, sort_keys=False), flush=True)
    return summary


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except EncoderSourceError as error:  # a user's setup problem: one line, no traceback
        sys.exit(f"prune.py: error: {error}")
