"""Result tables: EER and minDCF of score sets, as text and files."""

from speechbrain_w2vbert_sv.scoring.metrics import verification_metrics

RESULT_PRIORS = (0.01, 0.05)


def evaluate(scores, labels):
    """The figures of a results table: EER and minDCF at 0.01 and 0.05.

    Arguments
    ---------
    scores : array-like
        [T] scores.
    labels : array-like
        [T] 0/1 labels.

    Returns
    -------
    dict
        ``eer``, ``min_dcf@0.01``, ``min_dcf@0.05``, ``n_target``,
        ``n_nontarget`` (see ``metrics.verification_metrics``).

    Example
    -------
    >>> evaluate([0.9, 0.1], [1, 0])["eer"]
    0.0
    """
    return verification_metrics(scores, labels, p_targets=RESULT_PRIORS)


def format_results_table(results):
    """A Markdown table of verification results.

    Arguments
    ---------
    results : dict
        ``row name -> dict`` as returned by ``evaluate``.

    Returns
    -------
    str
        The table, one row per entry, EER in percent.

    Example
    -------
    >>> print(format_results_table({"Vox1-O": evaluate([0.9, 0.1], [1, 0])}))
    | list | targets/non-targets | EER (%) | minDCF (0.01) | minDCF (0.05) |
    |---|---|---|---|---|
    | Vox1-O | 1/1 | 0.000 | 0.0000 | 0.0000 |
    """
    header = ["list", "targets/non-targets", "EER (%)"] + [f"minDCF ({p:g})" for p in RESULT_PRIORS]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, row in results.items():
        cells = [
            str(name),
            f"{row['n_target']}/{row['n_nontarget']}",
            f"{100 * row['eer']:.3f}",
        ] + [f"{row[f'min_dcf@{p:g}']:.4f}" for p in RESULT_PRIORS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results_table(path, results):
    """Writes ``format_results_table(results)`` to ``path`` and returns it.

    Arguments
    ---------
    path : str or os.PathLike
        Output file (Markdown).
    results : dict
        ``row name -> dict`` as returned by ``evaluate``.

    Returns
    -------
    str
        The table written.
    """
    table = format_results_table(results)
    with open(path, "w", encoding="utf-8") as f:
        f.write(table + "\n")
    return table
