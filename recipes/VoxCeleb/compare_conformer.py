#!/usr/bin/env python3
"""Reproduces the system-B comparison table: ASR-pretrained Conformers for verification.

1. trains the small CTC ASR Conformer on the 18 training speakers of Arabic Speech
   Commands (``train_asr_ctc.py``; greedy WER on the 6 val speakers), unless
   ``--asr_folder`` gives a trained one;
2. trains the MFA-Conformer speaker model on the same 18 speakers four ways with
   ``train.py``: random initialisation, ASR initialisation, distillation from the ASR
   teacher with the ASR auxiliary loss, and the adaptor on the frozen ASR model;
3. writes one table (EER and minDCF on the val-speaker trial list, parameter counts)
   to ``<output_folder>/conformer_comparison.md`` and prints it; the last line printed
   holds ``name=value`` pairs.

Run from the repository root::

    python recipes/VoxCeleb/compare_conformer.py \
        --data_folder ../shared/data/arabic_speech_commands --output_folder results/conformer_cmp

Options: ``--epochs`` (speaker models), ``--asr_epochs``, ``--systems`` (a subset),
``--asr_folder`` (skip the ASR training), ``--seed``, ``--threads`` (torch threads:
on a shared 2-core machine one thread ran a training step 3-8x faster than two, whose
threads wait for each other).
"""

import argparse
import json
import pathlib
import subprocess
import sys

import torch

HERE = pathlib.Path(__file__).resolve().parent
try:
    import speechbrain_w2vbert_sv  # noqa: F401
except ImportError:  # run from a source checkout without installation
    sys.path.insert(0, str(HERE.parents[1]))

from speechbrain_w2vbert_sv.inference.verification import verify_trial_list  # noqa: E402
from speechbrain_w2vbert_sv.training.speaker_recipe import train_speaker_model  # noqa: E402
from speechbrain_w2vbert_sv.utils import count_parameters  # noqa: E402

# name -> (hparams file, description, extra overrides)
SYSTEMS = {
    "random": ("conformer_random.yaml", "random init", []),
    "asr_init": ("conformer_asr_init.yaml", "ASR-initialised", []),
    "distill": (
        "conformer_distill.yaml",
        "ASR-init + distillation (KL to the ASR CTC posteriors, w=0.5)",
        [],
    ),
    "adaptor": ("conformer_adaptor.yaml", "adaptor on the frozen ASR model", []),
    # Ablations (not run by default)
    "asr_init_lr": (
        "conformer_asr_init.yaml",
        "ASR-initialised, encoder lr = head lr",
        ["--backbone_lr=0.002"],
    ),
    "distill_feat": (
        "conformer_distill.yaml",
        "distillation + feature distillation (w=0.5)",
        ["--feature_weight=0.5"],
    ),
}
MAIN_SYSTEMS = ["random", "asr_init", "distill", "adaptor"]
TRIALS = "val_speakers_text_independent.txt"
TRIALS_PATH = pathlib.Path("trials") / TRIALS


def train_asr(args):
    """Trains the CTC ASR model; returns (pretrained folder, greedy WER %)."""
    output = pathlib.Path(args.output_folder) / "asr_conformer_ctc"
    # The ASR recipe runs as the user would run it; it writes its WER to wer.json.
    subprocess.run(
        [
            sys.executable,
            str(HERE / "train_asr_ctc.py"),
            str(HERE / "hparams" / "asr_conformer_ctc.yaml"),
            f"--data_folder={args.data_folder}",
            f"--output_folder={output}",
            f"--number_of_epochs={args.asr_epochs}",
            f"--seed={args.seed}",
        ],
        check=True,
    )
    return output / "pretrained", read_asr_wer(output / "pretrained")


def read_asr_wer(pretrained):
    """The greedy WER % that the ASR recipe wrote into its pretrained folder (or None)."""
    wer_file = pathlib.Path(pretrained) / "wer.json"
    if not wer_file.is_file():
        return None
    return json.loads(wer_file.read_text())["val_speakers_greedy_wer"]


def last_epoch_metrics(brain, data_folder):
    """EER/minDCF of the last epoch's model on the trial list (no checkpoint selection).

    ``train.py`` tests the checkpoint with the best validation EER, and its validation
    list is the trial list itself; the last epoch's figure is free of that selection.
    """
    checkpoint = pathlib.Path(brain.checkpointer.find_checkpoint().path)  # the latest
    results = verify_trial_list(
        checkpoint,
        pathlib.Path(data_folder) / TRIALS_PATH,
        data_folder,
        checkpoint.parent.parent / "last_epoch",
        make_plots=False,
        progress=False,
    )
    metrics = results[f"{TRIALS} cosine"]
    return 100.0 * metrics["eer"], metrics["min_dcf@0.01"]


def train_system(name, args, asr_folder):
    """Trains one system with train.py; returns its row of the table."""
    hparams_file, description, extra = SYSTEMS[name]
    argv = [
        str(HERE / "hparams" / hparams_file),
        f"--data_folder={args.data_folder}",
        f"--output_folder={pathlib.Path(args.output_folder) / name}",
        f"--number_of_epochs={args.epochs}",
        f"--seed={args.seed}",
        *extra,
    ]
    if name != "random":
        argv.append(f"--asr_folder={asr_folder}")
    brain = train_speaker_model(argv)
    result = brain.test_results[TRIALS]
    last_eer, last_min_dcf = last_epoch_metrics(brain, args.data_folder)
    model = brain.modules.embedding_model
    ctc = getattr(model, "ctc_lin", None)
    if ctc is None and hasattr(model, "asr_model"):
        ctc = model.asr_model.ctc_lin
    return {
        "name": name,
        "system": description,
        "encoder": count_parameters(model.frontend) + count_parameters(model.backbone),
        "head": count_parameters(model.head),
        "ctc": count_parameters(ctc) if ctc is not None else 0,
        "trainable": count_parameters(brain.modules.embedding_model, trainable_only=True),
        "classifier": count_parameters(brain.modules.classifier),
        "EER": result["EER"],
        "minDCF": result["minDCF"],
        "EER_last": last_eer,
        "minDCF_last": last_min_dcf,
    }


def format_table(rows, asr_wer):
    """Markdown table of the systems, with the ASR model's WER below it."""
    lines = [
        "| system | encoder params | speaker head params | CTC layer | trained params | "
        "EER % last epoch | minDCF last epoch | EER % best epoch* |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        head_share = 100.0 * row["head"] / row["encoder"]
        lines.append(
            f"| {row['system']} | {row['encoder']:,} | {row['head']:,} ({head_share:.1f} %) | "
            f"{row['ctc']:,} | {row['trainable']:,} | {row['EER_last']:.2f} | "
            f"{row['minDCF_last']:.3f} | {row['EER']:.2f} |"
        )
    lines.append("")
    lines.append(
        "*train.py's choice: the epoch with the lowest EER on this same trial list "
        "(optimistic); the last epoch's figures involve no selection."
    )
    if asr_wer is not None:
        lines.append("")
        lines.append(f"CTC ASR Conformer, greedy WER on the 6 val speakers: {asr_wer:.2f} %")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_folder", required=True, help="arabic_speech_commands folder")
    parser.add_argument("--output_folder", default="results/conformer_comparison")
    parser.add_argument("--asr_folder", default=None, help="trained ASR (pretrained/ folder)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--asr_epochs", type=int, default=40)
    parser.add_argument("--systems", nargs="+", default=MAIN_SYSTEMS, choices=list(SYSTEMS))
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (on a shared CPU, 1 runs these small models fastest)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    output = pathlib.Path(args.output_folder)
    output.mkdir(parents=True, exist_ok=True)

    asr_folder, asr_wer_value = None, None
    if args.asr_folder is None:
        # The random-init system alone needs no ASR model.
        if any(name != "random" for name in args.systems):
            asr_folder, asr_wer_value = train_asr(args)
    else:
        asr_folder = pathlib.Path(args.asr_folder)
        asr_wer_value = read_asr_wer(asr_folder)

    rows = []
    for name in args.systems:
        rows.append(train_system(name, args, asr_folder))
        (output / "rows.json").write_text(json.dumps(rows, indent=1))
    table = format_table(rows, asr_wer_value)
    (output / "conformer_comparison.md").write_text(table + "\n")
    print(table)
    pairs = [f"asr_wer={asr_wer_value:.2f}" if asr_wer_value is not None else "asr_wer=nan"]
    pairs += [f"eer_{name}={row['EER_last']:.2f}" for name, row in zip(args.systems, rows)]
    pairs += [f"params_trained_{name}={row['trainable']}" for name, row in zip(args.systems, rows)]
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
