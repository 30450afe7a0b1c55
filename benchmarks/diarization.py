"""Diarization of simulated conversations: DER and speed of both window modes, the
clustering against WeSpeaker's, and the real-time factor of a full-size model.

Model: the small teacher of ``recipes/VoxCeleb/README.md`` ("A small check on real
speech": ``stage2.yaml``, 64-wide 2-layer w2v-BERT encoder, MFA head, 6 epochs on the
18 Arabic Speech Commands training speakers), trained once into
``benchmarks/cache/diarization/`` (git-ignored; delete it to train again; a stopped
training resumes) and exported with ``w2vbert-sv export``.

Data: ``--conversations`` (default 8) conversations of the 6 held-out ASC val
speakers, simulated by :mod:`speechbrain_w2vbert_sv.applications.conversations` with a
fixed seed: 2-4 speakers, 10-16 turns of 2-5 utterances, no overlap (the diarizer
gives every instant one speaker), utterances trimmed of their silence (40 dB rule).

Per mode (``windows``, ``shared``): the Diarizer's defaults (1.5 s windows every
0.75 s, spectral clustering with the eigengap count) with Silero VAD (``der_<mode>``)
and with the reference speech regions (``der_oracle_vad_<mode>``); DER by
pyannote.metrics with a 0.25 s collar (each side) over the UEM (whole recording);
the same with no collar as ``<key>_no_collar`` (the collar around every boundary of
these 1 s utterances leaves about a third of the speech scored).
``rtf_<mode>``: seconds of processing (reading, VAD, embedding, clustering) per second
of audio, the two modes interleaved per conversation, ``--threads`` torch threads
(default 2). ``der_wespeaker_clusterer``: the oracle-VAD shared-mode window embeddings
clustered by WeSpeaker's ``wespeaker/diar/spectral_clusterer.py`` (its defaults;
``wespeaker-unofficial``) instead of ours: the same embeddings, another clustering
stage (compare with ``der_oracle_vad_shared``).

Full size (``rtf_full_fp32``, ``rtf_full_int8``, ``rtf_full_pruned_int8``): the
architecture of ``Wav2Vec2BertConfig()`` (580.5 M encoder parameters) with the MFA
head, random weights, built as ``benchmarks/deploy.py`` builds it (its 80 %-pruned
encoder too; int8: dynamic quantization), diarizing the first ``--full_seconds``
(default 20) of the first conversation in the default mode with Silero VAD, one timed
run after a 3 s warm-up per form.

Run from the repository root, next to ``../shared``: ``python benchmarks/diarization.py``
(once measured on the 2-core machine loaded by other work: 14 min to train the teacher,
then 3 min; ``--quick``: a 1-epoch teacher, 2 conversations, a small "full-size" model). The last
line holds ``name=value`` pairs. How to measure on a shared machine:
../shared/BENCHMARKING.md.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from _environment import PASSIVE_OPENMP_ENV, restart_with

restart_with(PASSIVE_OPENMP_ENV)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from speechbrain_w2vbert_sv.applications.conversations import (  # noqa: E402
    simulate_conversations,
    utterances_from_folder,
)
from speechbrain_w2vbert_sv.applications.der import score_diarization  # noqa: E402
from speechbrain_w2vbert_sv.applications.diarization import (  # noqa: E402
    MODES,
    Diarizer,
    cluster,
    labels_to_segments,
)
from speechbrain_w2vbert_sv.applications.rttm import (  # noqa: E402
    read_rttm,
    read_segments,
    read_uem,
)
from speechbrain_w2vbert_sv.data.generic import ASC_SPEAKER_REGEX  # noqa: E402
from speechbrain_w2vbert_sv.inference.interface import load_model  # noqa: E402
from speechbrain_w2vbert_sv.inference.quantization import quantize_dynamic_int8  # noqa: E402
from tests.conftest import DATA_ROOT  # noqa: E402
from tests.wespeaker_peer import wespeaker_spectral_cluster  # noqa: E402

CACHE = REPO_ROOT / "benchmarks" / "cache" / "diarization"
ASC = DATA_ROOT / "arabic_speech_commands"
# recipes/VoxCeleb/README.md, "A small check on real speech": its MODEL and DATA arrays.
MODEL = [
    "--w2vbert_source=null",
    "--w2vbert_config={hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, "
    "intermediate_size: 256}",
    "--num_hidden_states=3",
    "--hidden_size=64",
    "--embedding_size=128",
]
DATA = [
    "--data_format=folder",
    f"--data_folder={ASC}",
    r"--speaker_regex=(\d{8})_NO_\d+\.\w+$",
    "--trials=[trials/val_speakers_text_independent.txt]",
    "--trials_folder=null",
    "--crop_seconds=1.0",
    "--speed_perturb=[0.9,1.0,1.1]",
    "--dev_ratio=0.0",
    "--prep_workers=0",
    "--num_workers=0",
    "--batch_size=32",
    "--precision=fp32",
]


def teacher(epochs):
    """The exported teacher: trained (README command, one thread) and exported unless
    the cache holds it."""
    name = "teacher" if epochs == 6 else f"teacher_{epochs}epochs"
    run, export = CACHE / name, CACHE / f"{name}_export"
    if (export / "embedding_model.ckpt").is_file():
        print(f"teacher: reusing {export}")
        return export
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = [sys.executable, "recipes/VoxCeleb/train.py", "recipes/VoxCeleb/hparams/stage2.yaml"]
    train += [f"--output_folder={run}", *MODEL, *DATA, "--init_from=null"]
    train += [f"--number_of_epochs={epochs}", "--lr=0.002", "--final_lr=0.0001"]
    train += ["--make_augment=null"]
    start = time.perf_counter()
    export_command = [sys.executable, "-m", "speechbrain_w2vbert_sv.cli", "export"]
    export_command += ["--run", str(run), "--output", str(export)]
    for command in (train, export_command):
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{' '.join(command[1:3])} failed:\n{done.stderr[-3000:]}")
    print(f"teacher: trained and exported in {time.perf_counter() - start:.0f} s")
    return export


def conversations(count):
    """Simulated conversations of the ASC val speakers (rewritten each run: same seed,
    same files)."""
    folder = CACHE / f"conversations_{count}"
    utterances = utterances_from_folder(ASC, ASC_SPEAKER_REGEX, CACHE / "asc_val", "val.csv")
    simulate_conversations(
        utterances,
        folder,
        count,
        speakers=(2, 4),
        turns=(10, 16),
        utterances_per_turn=(2, 5),
        seed=0,
    )
    return folder


def oracle_segments(diarizer, wav, speech, clusterer=None):
    """Segments from given speech regions; with ``clusterer`` also those of another
    clustering of the same window embeddings."""
    windows, embeddings = diarizer.window_embeddings(wav, diarizer.speech_regions(wav, speech))
    ours = labels_to_segments(windows, cluster(embeddings, **diarizer.cluster_options))
    if clusterer is None:
        return ours, None
    np.random.seed(0)  # WeSpeaker's k-means uses NumPy's global state
    return ours, labels_to_segments(windows, np.asarray(clusterer(embeddings)))


def full_size_rtf(wav, template, quick):
    """Real-time factors of a full-size w2v-BERT MFA model (fp32, int8, pruned int8)
    diarizing ``wav`` (default mode, Silero VAD)."""
    if quick:
        os.environ["DEPLOY_SMALL"] = "1"  # deploy.py's small architecture
    from deploy import build_ours, prune, randomise

    def rtf(embedding_model, name):
        template.mods.embedding_model = embedding_model
        diarizer = Diarizer(template)
        diarizer.diarize_waveform(wav[: 3 * 16000])  # warm-up
        start = time.perf_counter()
        segments = diarizer.diarize_waveform(wav)
        seconds = time.perf_counter() - start
        print(
            f"full size {name}: {seconds:.1f} s for {len(wav) / 16000:.0f} s of audio, "
            f"{len(segments)} segments"
        )
        return seconds / (len(wav) / 16000)

    start = time.perf_counter()
    model = randomise(build_ours())
    print(f"full size: built in {time.perf_counter() - start:.0f} s")
    figures = {"rtf_full_fp32": rtf(model, "fp32")}
    figures["rtf_full_int8"] = rtf(quantize_dynamic_int8(model), "int8")
    with tempfile.TemporaryDirectory() as folder:
        pruned = prune(model, folder)
        del model
        figures["rtf_full_pruned_int8"] = rtf(quantize_dynamic_int8(pruned), "pruned int8")
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--full_seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="a smoke check of the script")
    args = parser.parse_args()
    started = time.perf_counter()
    count = 2 if args.quick else args.conversations

    export = teacher(epochs=1 if args.quick else 6)
    folder = conversations(count)
    torch.set_num_threads(args.threads)
    model = load_model(export, run_opts={"device": "cpu"})
    reference, uem = read_rttm(folder), read_uem(folder)
    recordings = sorted(reference)
    diarizers = {mode: Diarizer(model, mode=mode) for mode in MODES}
    wespeaker_cluster = wespeaker_spectral_cluster()

    hypotheses = {f"{kind}_{mode}": {} for kind in ("der", "der_oracle_vad") for mode in MODES}
    hypotheses["der_wespeaker_clusterer"] = {}
    seconds = {mode: 0.0 for mode in MODES}
    audio_seconds = 0.0
    for recording in recordings:
        path = folder / f"{recording}.wav"
        wav = model.load_audio(str(path))
        audio_seconds += len(wav) / 16000
        speech = read_segments(folder / f"{recording}.rttm")[recording]
        for mode, diarizer in diarizers.items():
            start = time.perf_counter()
            hypotheses[f"der_{mode}"][recording] = diarizer.diarize_file(path)
            seconds[mode] += time.perf_counter() - start
            other = wespeaker_cluster if mode == "shared" else None
            ours, theirs = oracle_segments(diarizer, wav, speech, other)
            hypotheses[f"der_oracle_vad_{mode}"][recording] = ours
            if theirs is not None:
                hypotheses["der_wespeaker_clusterer"][recording] = theirs

    def speaker_counts(table):
        return [len({speaker for *_, speaker in table[r]}) for r in recordings]

    print(f"speakers per conversation: {speaker_counts(reference)}")
    figures = {}
    for collar, suffix in ((0.25, ""), (0.0, "_no_collar")):
        for name, hypothesis in hypotheses.items():
            _, total = score_diarization(reference, hypothesis, collar=collar, uem=uem)
            print(
                f"{name}{suffix}: {total.line()} (reference speech scored: {total.speech:.1f} s; "
                f"speakers found: {speaker_counts(hypothesis)})"
            )
            figures[name + suffix] = total.der
    for mode in MODES:
        figures[f"rtf_{mode}"] = seconds[mode] / audio_seconds
    first = model.load_audio(str(folder / f"{recordings[0]}.wav"))
    full = first[: int(args.full_seconds * 16000)]
    figures.update(full_size_rtf(full, load_model(export, run_opts={"device": "cpu"}), args.quick))
    figures["conversations"] = count
    figures["audio_s"] = audio_seconds
    figures["threads"] = args.threads
    figures["seconds"] = time.perf_counter() - started
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
        + f" load={load}"
    )


if __name__ == "__main__":
    main()
