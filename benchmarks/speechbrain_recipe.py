"""Training speed and EER of the same small w2v-BERT MFA through SpeechBrain's own
``train_speaker_embeddings.py`` (with ``hparams/speechbrain_recipes/train_w2vbert_mfa.yaml``)
and through this package's ``recipes/VoxCeleb/train.py`` (``quickstart.yaml``).

The same model (64-wide, 2-layer encoder trained whole from random weights, 128-dim
MFA embedding; the quickstart's sizes), the same data (every utterance of the 18
Arabic Speech Commands training speakers, 1 s, batch 16, no augmentation and no speed
perturbation: SpeechBrain's yaml is run without its ``wav_augment``), the same
learning rate (0.002) and AAM margin (0.2), fp32, 2 threads, no data workers, the
allocator settings of ``../shared/BENCHMARKING.md`` for both. Each
script validates as it does by default (SpeechBrain: classification error on held-out
utterances of the training speakers; ours: EER on the trial list of 300 utterances).

Seconds per epoch: a 2-epoch run of each, in a fresh folder; the time between the
"Going into epoch 1" and "Going into epoch 2" lines of its ``log.txt`` (SpeechBrain's
epoch loop writes them for both) is one epoch, training, validation and checkpoint,
free of start-up and final test. The systems alternate (SpeechBrain, ours,
SpeechBrain, ours, ...), ``--repeats`` times; medians with min-max. EER: both models
exported and scored by ``w2vbert-sv score`` on the 6 held-out speakers' list (the same
scoring for both), per repeat.

Run from the repository root, next to ``../shared`` (data and SpeechBrain's scripts;
about 15 min on an idle 2-core machine)::

    python benchmarks/speechbrain_recipe.py

The last line holds ``name=value`` pairs: ``ratio`` (our seconds per epoch /
SpeechBrain's), the seconds per epoch, the EERs (%) and the load average before and after.
"""

import argparse
import datetime
import os
import pathlib
import re
import statistics
import sys
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from _environment import MALLOC_ENV  # noqa: E402

from tests.conftest import DATA_ROOT, SPEECHBRAIN_RECIPES  # noqa: E402
from tests.integration.test_speechbrain_recipes import (  # noqa: E402
    ASC,
    SMALL_W2VBERT_MFA,
    TRIALS,
    YAMLS,
    cli,
    overrides,
    prepare_training,
    recipe_folder,
    run_script,
    score,
    script_env,
    train,
)

QUICKSTART = REPO_ROOT / "recipes" / "VoxCeleb" / "hparams" / "quickstart.yaml"


def _env():
    return script_env(threads=2, **MALLOC_ENV)


def _run(cmd, cwd):
    run_script(cwd, *cmd, timeout=3600, env=_env())


EPOCH_START = re.compile(
    r"^(\S+ \S+) - speechbrain\.utils\.epoch_loop - INFO - Going into epoch (\d+)"
)


def first_epoch_seconds(run):
    """Seconds from the start of epoch 1 to the start of epoch 2, from ``log.txt``."""
    starts = {}
    for line in (run / "log.txt").read_text(encoding="utf-8").splitlines():
        match = EPOCH_START.match(line)
        if match:
            starts[int(match.group(2))] = datetime.datetime.strptime(
                match.group(1), "%Y-%m-%d %H:%M:%S,%f"
            )
    return (starts[2] - starts[1]).total_seconds()


def speechbrain_yaml(folder):
    """The shipped yaml without SpeechBrain's augmentation (the other system has none)."""
    text = (YAMLS / "train_w2vbert_mfa.yaml").read_text(encoding="utf-8")
    start = text.index("wav_augment: !new:")
    end = text.index("\nmodules:")
    path = folder / "train_w2vbert_mfa_clean.yaml"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    return path


def speechbrain_run(recipe, yaml, asc, run):
    # Every training utterance, as the other system trains on.
    num_speakers = prepare_training(asc, run / "save", train_on_dev=True)
    train(
        recipe,
        yaml,
        asc,
        run,
        num_speakers,
        "--number_of_epochs=2",
        "--lr=0.002",
        "--step_size=300",
        *overrides(SMALL_W2VBERT_MFA),
        batch_size=16,
        env=_env(),
    )


def our_run(asc, run):
    cmd = [
        REPO_ROOT / "recipes" / "VoxCeleb" / "train.py",
        QUICKSTART,
        f"--output_folder={run}",
        "--data_format=folder",
        f"--data_folder={asc}",
        r"--speaker_regex=(\d{8})_NO_\d+\.\w+$",
        f"--trials=[{TRIALS}]",
        "--crop_seconds=1.0",
        "--speed_perturb=[1.0]",
        "--batch_size=16",
        "--lr=0.002",
        "--number_of_epochs=2",
        "--valid_max_utterances=300",
        "--precision=fp32",
        "--num_threads=2",  # the quickstart's own setting is 1
        "--noprogressbar",
    ]
    _run(cmd, REPO_ROOT)


def eer(run, asc, out):
    """EER (%) of a run on the held-out speakers, exported and scored by our CLI."""
    cli("export", "--run", run, "--output", out / "model", env=_env())
    return 100 * score(out / "model", asc, out / "scores", env=_env())["cosine"]["eer"]


def _median(values):
    return statistics.median(values), min(values), max(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asc = DATA_ROOT / ASC
    if not (SPEECHBRAIN_RECIPES / "VoxCeleb").is_dir() or not asc.is_dir():
        sys.exit(f"needs {asc} and {SPEECHBRAIN_RECIPES} (../shared)")
    load_before = os.getloadavg()[0]
    epoch_s = {"speechbrain": [], "ours": []}
    eers = {"speechbrain": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        recipe = recipe_folder(SPEECHBRAIN_RECIPES, tmp / "recipe")
        yaml = speechbrain_yaml(tmp)
        for r in range(args.repeats):
            sb, ours = tmp / f"sb{r}", tmp / f"ours{r}"
            speechbrain_run(recipe, yaml, asc, sb)
            our_run(asc, ours)
            epoch_s["speechbrain"].append(first_epoch_seconds(sb))
            epoch_s["ours"].append(first_epoch_seconds(ours))
            eers["speechbrain"].append(eer(sb, asc, tmp / f"sb{r}_eer"))
            eers["ours"].append(eer(ours, asc, tmp / f"ours{r}_eer"))
            print(
                f"repeat {r + 1}: seconds per epoch SpeechBrain {epoch_s['speechbrain'][-1]:.1f}, "
                f"ours {epoch_s['ours'][-1]:.1f}; EER SpeechBrain {eers['speechbrain'][-1]:.2f} %, "
                f"ours {eers['ours'][-1]:.2f} %",
                flush=True,
            )
    sb, ours = _median(epoch_s["speechbrain"]), _median(epoch_s["ours"])
    ratios = [o / s for o, s in zip(epoch_s["ours"], epoch_s["speechbrain"])]
    print(
        f"ratio={statistics.median(ratios):.3f} "
        f"ours_epoch_s={ours[0]:.1f} ours_epoch_s_min={ours[1]:.1f} ours_epoch_s_max={ours[2]:.1f} "
        f"speechbrain_epoch_s={sb[0]:.1f} speechbrain_epoch_s_min={sb[1]:.1f} "
        f"speechbrain_epoch_s_max={sb[2]:.1f} "
        f"ours_eer={statistics.median(eers['ours']):.2f} "
        f"speechbrain_eer={statistics.median(eers['speechbrain']):.2f} "
        f"load_before={load_before:.2f} load_after={os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
