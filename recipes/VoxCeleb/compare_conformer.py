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
``--asr_folder`` (skip the ASR training), ``--seed``.
"""

import argparse
import json
import logging
import pathlib
import sys
from unittest import mock

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import train  # noqa: E402  (recipes/VoxCeleb/train.py)
import train_asr_ctc  # noqa: E402

from speechbrain_w2vbert_sv.distillation import ConformerDistillationBrain  # noqa: E402

logger = logging.getLogger(__name__)

# name -> (hparams file, Brain class, description)
SYSTEMS = {
    "random": ("conformer_random.yaml", None, "random init"),
    "asr_init": ("conformer_asr_init.yaml", None, "ASR-initialised"),
    "distill": ("conformer_distill.yaml", ConformerDistillationBrain, "ASR-init + distillation (KL to ASR CTC, w=0.5)"),
    "adaptor": ("conformer_adaptor.yaml", None, "adaptor on the frozen ASR model"),
}
TRIALS = "val_speakers_text_independent.txt"


def count(module, trainable_only=False):
    """Number of parameters (only those that train, if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def train_asr(args):
    """Trains the CTC ASR model; returns (pretrained folder, greedy WER %)."""
    output = pathlib.Path(args.output_folder) / "asr_conformer_ctc"
    wer = train_asr_ctc.main([
        str(HERE / "hparams" / "asr_conformer_ctc.yaml"),
        f"--data_folder={args.data_folder}",
        f"--output_folder={output}",
        f"--number_of_epochs={args.asr_epochs}",
        f"--seed={args.seed}",
    ])
    return output / "pretrained", wer


def train_speaker_model(name, args, asr_folder):
    """Trains one system with train.py; returns its row of the table."""
    hparams_file, brain_class, description = SYSTEMS[name]
    argv = [
        str(HERE / "hparams" / hparams_file),
        f"--data_folder={args.data_folder}",
        f"--output_folder={pathlib.Path(args.output_folder) / name}",
        f"--number_of_epochs={args.epochs}",
        f"--seed={args.seed}",
    ]
    if name != "random":
        argv.append(f"--asr_folder={asr_folder}")
    # train.py builds a SpeakerBrain; the distillation needs its subclass.
    patch = mock.patch.object(train, "SpeakerBrain", brain_class or train.SpeakerBrain)
    with patch:
        brain = train.main(argv)
    model = brain.modules.embedding_model
    result = brain.test_results[TRIALS]
    ctc = getattr(model, "ctc_lin", None)
    if ctc is None and hasattr(model, "asr_model"):
        ctc = model.asr_model.ctc_lin
    return {
        "system": description,
        "encoder": count(model.frontend) + count(model.backbone),
        "head": count(model.head),
        "ctc": count(ctc) if ctc is not None else 0,
        "trainable": count(brain.modules.embedding_model, trainable_only=True),
        "classifier": count(brain.modules.classifier),
        "EER": result["EER"],
        "minDCF": result["minDCF"],
    }


def format_table(rows, asr_wer):
    """Markdown table of the systems, with the ASR model's WER below it."""
    lines = [
        "| system | encoder params | speaker head params | CTC layer | trained params | "
        "EER % | minDCF(0.01) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        head_share = 100.0 * row["head"] / row["encoder"]
        lines.append(
            f"| {row['system']} | {row['encoder']:,} | {row['head']:,} ({head_share:.1f} %) | "
            f"{row['ctc']:,} | {row['trainable']:,} | {row['EER']:.2f} | {row['minDCF']:.3f} |"
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
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--asr_epochs", type=int, default=15)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--seed", type=int, default=1986)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    output = pathlib.Path(args.output_folder)
    output.mkdir(parents=True, exist_ok=True)

    if args.asr_folder is None:
        asr_folder, asr_wer = train_asr(args)
    else:
        asr_folder = pathlib.Path(args.asr_folder)
        wer_file = asr_folder / "wer.json"
        asr_wer = json.loads(wer_file.read_text())["val_speakers_greedy_wer"] if wer_file.is_file() else None

    rows = []
    for name in args.systems:
        rows.append(train_speaker_model(name, args, asr_folder))
        (output / "rows.json").write_text(json.dumps(rows, indent=1))
    table = format_table(rows, asr_wer)
    (output / "conformer_comparison.md").write_text(table + "\n")
    print(table)
    pairs = [f"asr_wer={asr_wer:.2f}" if asr_wer is not None else "asr_wer=nan"]
    pairs += [f"eer_{name}={row['EER']:.2f}" for name, row in zip(args.systems, rows)]
    pairs += [f"params_trained_{name}={row['trainable']}" for name, row in zip(args.systems, rows)]
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
