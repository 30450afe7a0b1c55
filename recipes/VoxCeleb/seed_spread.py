"""Mean and spread over seeds of ``compare_conformer.py`` runs.

One system-B comparison run per seed (each with its own output folder), then this
script reads every folder's ``rows.json`` (and the ASR model's ``wer.json`` where the
run trained one) and writes the table with the mean, the sample standard deviation
and the range of each figure. The last line printed holds ``name=value`` pairs.

Run from the repository root::

    for seed in 1986 1987 1988; do
        OMP_NUM_THREADS=1 python recipes/VoxCeleb/compare_conformer.py \\
            --data_folder ../shared/data/arabic_speech_commands \\
            --output_folder results/conformer_cmp_$seed --seed $seed
    done
    python recipes/VoxCeleb/seed_spread.py results/conformer_cmp_1986 \\
        results/conformer_cmp_1987 results/conformer_cmp_1988 \\
        --output results/conformer_seeds.md
"""

import argparse
import json
import pathlib
import re
import statistics

FIGURES = [
    ("EER_last", "EER % last epoch", 2),
    ("minDCF_last", "minDCF last epoch", 3),
    ("EER", "EER % best epoch*", 2),
]
WER_FILE = pathlib.Path("asr_conformer_ctc") / "pretrained" / "wer.json"
VALID_EER = re.compile(r"^epoch: (\d+),.* valid EER: ([0-9.]+)", re.MULTILINE)


def spread(values):
    """(mean, sample standard deviation or None for one value, min, max)."""
    sd = statistics.stdev(values) if len(values) > 1 else None
    return statistics.mean(values), sd, min(values), max(values)


def format_spread(values, digits):
    """``mean ± sd (min-max)``, or the value alone for one run."""
    mean, sd, low, high = spread(values)
    if sd is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def read_runs(folders):
    """System -> list of rows (one per folder, in order) and the list of ASR WERs.

    Arguments
    ---------
    folders : list of os.PathLike
        ``compare_conformer.py`` output folders (one per seed).

    Returns
    -------
    dict, list of float
        Rows of each system (keyed by its description), ASR WERs (where trained).
    """
    systems, wers = {}, []
    for folder in map(pathlib.Path, folders):
        rows_file = folder / "rows.json"
        if not rows_file.is_file():
            raise ValueError(f"{rows_file}: missing (not a finished compare_conformer.py run)")
        for row in json.loads(rows_file.read_text()):
            systems.setdefault(row["system"], []).append(row)
        if (folder / WER_FILE).is_file():
            wers.append(json.loads((folder / WER_FILE).read_text())["val_speakers_greedy_wer"])
    return systems, wers


def format_spread_table(systems, wers):
    """Markdown table: each system's figures as mean ± sd (min-max) over its runs.

    Example
    -------
    >>> rows = [{"EER_last": e, "minDCF_last": 0.9, "EER": e - 1} for e in (12.0, 14.0)]
    >>> cells = format_spread_table({"random": rows}, []).splitlines()[2].split(" | ")
    >>> cells[1:3]
    ['2', '13.00 ± 1.41 (12.00-14.00)']
    >>> cells[3:]
    ['0.900 ± 0.000 (0.900-0.900)', '12.00 ± 1.41 (11.00-13.00) |']
    """
    header = " | ".join(title for _, title, _ in FIGURES)
    lines = [f"| system | runs | {header} |", "|---|---:|" + "---:|" * len(FIGURES)]
    for name, rows in systems.items():
        cells = [format_spread([row[key] for row in rows], digits) for key, _, digits in FIGURES]
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    lines += ["", "mean ± sample standard deviation (min-max) over the runs (seeds)."]
    if wers:
        wer = format_spread(wers, 2)
        lines += [
            "",
            f"CTC ASR Conformer, greedy WER on the 6 val speakers ({len(wers)} runs): "
            + f"{wer} %",
        ]
    return "\n".join(lines)


def summary_pairs(systems, wers):
    """``name=value`` pairs: mean and sd of the last-epoch EER of each system, ASR WER.

    Example
    -------
    >>> rows = [{"name": "random", "EER_last": e} for e in (12.0, 14.0)]
    >>> summary_pairs({"random init": rows}, [30.0])
    'eer_random_mean=13.00 eer_random_sd=1.41 asr_wer_mean=30.00 asr_wer_sd=nan'
    """
    pairs = []

    def add(key, values):
        mean, sd, _, _ = spread(values)
        pairs.extend([f"{key}_mean={mean:.2f}", f"{key}_sd={'nan' if sd is None else f'{sd:.2f}'}"])

    for index, rows in enumerate(systems.values()):
        add(f"eer_{rows[0].get('name', index)}", [row["EER_last"] for row in rows])
    if wers:
        add("asr_wer", wers)
    return " ".join(pairs)


def epoch_table(folders):
    """Validation EER per epoch of each system over the runs, from ``train_log.txt``.

    Works on unfinished runs too (``<folder>/<system>/train_log.txt`` is written at
    the end of every epoch).

    Arguments
    ---------
    folders : list of os.PathLike
        ``compare_conformer.py`` output folders (one per seed).

    Returns
    -------
    str
        Markdown table: system, epoch, runs, each run's EER, mean ± sd (min-max).
    """
    found = {}
    for folder in map(pathlib.Path, folders):
        for log in sorted(folder.glob("*/train_log.txt")):
            for epoch, eer in VALID_EER.findall(log.read_text()):
                found.setdefault((log.parent.name, int(epoch)), []).append(float(eer))
    lines = [
        "| system | epoch | runs | valid EER % of each run | mean ± sd (min-max) |",
        "|---|---:|---:|---|---:|",
    ]
    for (name, epoch), eers in sorted(found.items()):
        each = ", ".join(f"{eer:.2f}" for eer in eers)
        lines.append(f"| {name} | {epoch} | {len(eers)} | {each} | {format_spread(eers, 2)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="compare_conformer.py output folders")
    parser.add_argument("--output", default=None, help="also write the table to this file")
    parser.add_argument(
        "--epochs",
        action="store_true",
        help="per-epoch validation EER from the train logs instead (unfinished runs too)",
    )
    args = parser.parse_args(argv)
    if args.epochs:
        print(epoch_table(args.folders))
        return
    systems, wers = read_runs(args.folders)
    table = format_spread_table(systems, wers)
    if args.output:
        pathlib.Path(args.output).write_text(table + "\n")
    print(table)
    print(summary_pairs(systems, wers))


if __name__ == "__main__":
    main()
