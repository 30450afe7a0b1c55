"""Our models in SpeechBrain's own speaker recipes, run unchanged, and their runs in
our tools.

SpeechBrain v1.1.0's ``train_speaker_embeddings.py``, ``speaker_verification_cosine.py``
and ``extract_speaker_embeddings.py`` (kept outside this repository, see PEERS.md) are
copied into a temporary folder with ``voxceleb_prepare.py`` and run as a user would,
with the yamls of ``hparams/speechbrain_recipes/``: the CSVs they read are written for
the Arabic Speech Commands training speakers, the noise CSV points at the corpus's
real background noise and the RIR CSV at a generated impulse response (nothing is
downloaded: the preparation steps are overridden with a no-op).
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import soundfile

from tests.conftest import REPO_ROOT

YAMLS = REPO_ROOT / "hparams" / "speechbrain_recipes"
ASC = "arabic_speech_commands"
TRIALS = "trials/val_speakers_text_independent.txt"
SCRIPTS = (
    "train_speaker_embeddings.py",
    "speaker_verification_cosine.py",
    "extract_speaker_embeddings.py",
    "voxceleb_prepare.py",
)
# SpeechBrain's downloads, turned into a no-op call.
NO_DOWNLOADS = [
    "--prepare_noise_data=!name:builtins.print",
    "--prepare_rir_data=!name:builtins.print",
]
# A small w2v-BERT MFA (the size of the quickstart), trained whole from random weights.
SMALL_W2VBERT_MFA = {
    "w2vbert_source": None,
    "w2vbert_config": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 256,
        "conv_depthwise_kernel_size": 15,
    },
    "freeze_backbone": False,
    "lora_rank": 0,
    "num_hidden_states": 3,
    "hidden_size": 64,
    "adapter_size": 64,
    "attention_channels": 64,
    "embedding_size": 128,
}
EER_LOG = re.compile(r"EER\(%\)=([0-9.]+)")


def overrides(values):
    """Command-line overrides of a dict (values as JSON, which YAML reads)."""
    return [f"--{key}={json.dumps(value)}" for key, value in values.items()]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_script(folder, script, *args, timeout=1200):
    """Runs one of SpeechBrain's scripts from ``folder``; returns stdout + stderr."""
    cmd = [sys.executable, script, *map(str, args)]
    proc = subprocess.run(
        cmd, cwd=folder, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{output[-6000:]}"
    return output


def recipe_folder(speechbrain_recipes, folder):
    """SpeechBrain's VoxCeleb speaker scripts, copied into ``folder`` (unchanged)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SCRIPTS:
        shutil.copy(speechbrain_recipes / "VoxCeleb" / "SpeakerRec" / name, folder / name)
    return folder


def _rows(asc, files, spk_of):
    for path in files:
        info = soundfile.info(str(asc / path))
        yield {
            "ID": path.rsplit(".", 1)[0],
            "duration": info.frames / info.samplerate,
            "wav": str(asc / path),
            "start": 0,
            "stop": info.frames,
            "spk_id": spk_of(path),
        }


def write_csv(path, rows):
    """A CSV with the columns of SpeechBrain's VoxCeleb preparation."""
    rows = list(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["ID", "duration", "wav", "start", "stop", "spk_id"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def speaker_of(path):
    """The speaker of an Arabic Speech Commands file: its first 8 digits."""
    return re.search(r"(\d{8})_NO_", path).group(1)


def prepare_training(asc, save_folder, dev_per_speaker=8):
    """``train.csv``/``dev.csv`` (training speakers, a few utterances each held out
    for the classification error), ``noise.csv`` (the corpus's real noise) and
    ``rir.csv`` (one generated impulse response) in ``save_folder``."""
    save_folder.mkdir(parents=True, exist_ok=True)
    with open(asc / "train.csv", encoding="utf-8") as f:
        files = [row["file"] for row in csv.DictReader(f)]
    by_speaker = {}
    for path in files:
        by_speaker.setdefault(speaker_of(path), []).append(path)
    rng = np.random.default_rng(0)
    train, dev = [], []
    for speaker in sorted(by_speaker):
        paths = sorted(by_speaker[speaker])
        held = set(rng.choice(len(paths), dev_per_speaker, replace=False).tolist())
        for i, path in enumerate(paths):
            (dev if i in held else train).append(path)
    write_csv(save_folder / "train.csv", _rows(asc, train, speaker_of))
    write_csv(save_folder / "dev.csv", _rows(asc, dev, speaker_of))

    noise = sorted((asc / "background_noise").glob("*.flac"))
    with open(save_folder / "noise.csv", "w", encoding="utf-8") as f:
        f.write("ID,duration,wav,wav_format,wav_opts\n")
        for path in noise:
            info = soundfile.info(str(path))
            f.write(f"{path.stem},{info.frames / info.samplerate},{path},flac,\n")
    # An exponentially decaying noise tail: a plausible 0.3 s room response.
    rng = np.random.default_rng(1)
    t = np.arange(int(0.3 * 16000)) / 16000
    rir = rng.standard_normal(t.size) * np.exp(-t / 0.05)
    rir[0] = 1.0
    soundfile.write(str(save_folder / "rir.wav"), (0.5 * rir / np.abs(rir).max()), 16000)
    with open(save_folder / "rir.csv", "w", encoding="utf-8") as f:
        f.write("ID,duration,wav,wav_format,wav_opts\n")
        f.write(f"rir,0.3,{save_folder / 'rir.wav'},wav,\n")
    return len(by_speaker)


def prepare_verification(asc, save_folder):
    """``enrol.csv``, ``test.csv`` (the trial list's files, IDs as the verification
    script reads them from the list) and ``train.csv`` for ``speaker_verification_cosine.py``."""
    save_folder.mkdir(parents=True, exist_ok=True)
    lines = (asc / TRIALS).read_text(encoding="utf-8").split("\n")
    enrol = sorted({line.split()[1] for line in lines if line.strip()})
    test = sorted({line.split()[2] for line in lines if line.strip()})
    write_csv(save_folder / "enrol.csv", _rows(asc, enrol, speaker_of))
    write_csv(save_folder / "test.csv", _rows(asc, test, speaker_of))
    if not (save_folder / "train.csv").is_file():
        write_csv(save_folder / "train.csv", _rows(asc, enrol[:10], speaker_of))
