"""The start every recipe shares: SpeechBrain's command line, hyperparameters and
experiment folder."""

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml


def start_experiment(argv, distributed=False):
    """Parses a recipe's command line, loads its yaml and creates its output folder.

    Arguments
    ---------
    argv : list of str
        ``<hparams file> [--SpeechBrain options] [--overrides]``.
    distributed : bool
        Join the DDP process group first (training recipes under torchrun).

    Returns
    -------
    hparams : dict
        The loaded hyperparameters.
    run_opts : dict
        SpeechBrain's run options (``device``, ``precision``, ...).

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> _ = (folder / "x.yaml").write_text("output_folder: !PLACEHOLDER\\nlr: 0.1\\n")
    >>> hparams, run_opts = start_experiment(
    ...     [str(folder / "x.yaml"), f"--output_folder={folder / 'out'}", "--lr=0.2"])
    speechbrain...Beginning experiment!...
    >>> hparams["lr"], (folder / "out" / "hyperparams.yaml").is_file()
    (0.2, True)
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if distributed:
        sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    return hparams, run_opts
