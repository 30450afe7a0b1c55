"""Time and memory of one training step of the full-size w2v-BERT 2.0 speaker model:
stage 1 (frozen encoder + LoRA r=64 on linear_q/linear_v) against stage 2 (LoRA
merged, everything trainable).

The model is the recipe's: ``W2VBertFbank`` -> ``W2VBertBackbone`` with the
architecture of ``Wav2Vec2BertConfig()`` (580.5 M parameters, random weights) ->
``MFAHead`` with its defaults (6.16 M) -> cosine classifier over 17,982 classes
(VoxCeleb2's 5,994 speakers x 3 speed factors), AAM loss, AdamW, gradient clipping at
1.0, one optimizer for the backbone and one for the rest: the step is
``SpeakerBrain.fit_batch`` itself. Batch: 2 waveforms of 3 s, fp32,
``torch.set_num_threads(2)``.

Each measurement runs in a fresh process (about 2.4 GB of weights, up to about
10 GB in stage 2 with the AdamW states): it builds the model, runs one warm-up step
(which also allocates the optimizer states), then one timed step whose peak RSS is
recorded (``/proc/self/clear_refs`` resets the peak before it). The processes
alternate stage 1, stage 2, stage 1, ... (``--repeats`` each, default 3); medians
with min-max are printed. Memory figures are the peak RSS of the timed step minus
the RSS once the model is built: everything training holds beyond the weights
(gradients, optimizer states, activations). The malloc settings of
``../shared/BENCHMARKING.md`` apply to every process.

Run from the repository root (about 10 min on an idle 2-core machine)::

    python benchmarks/train_step.py

The last line holds ``name=value`` pairs: ``ratio`` (stage-2 step time / stage-1),
``mem_ratio``, the absolute figures (seconds, MB = 1e6 bytes), the trainable
parameter counts and the load average before and after.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

from _environment import MALLOC_ENV

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
STAGES = ("stage1", "stage2")
NUM_CLASSES = 5994 * 3
BATCH, SECONDS, SAMPLE_RATE = 2, 3, 16000


def status_kb(field):
    """A field of /proc/self/status, in kB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def build_brain(stage):
    """The recipe's Brain on the full-size model, set up for stage 1 or stage 2."""
    import torch
    from speechbrain.lobes.models.ECAPA_TDNN import Classifier
    from transformers import Wav2Vec2BertConfig
    from transformers.initialization import no_init_weights

    from speechbrain_w2vbert_sv.lobes.embedding_model import SpeakerEmbeddingModel
    from speechbrain_w2vbert_sv.lobes.heads import MFAHead
    from speechbrain_w2vbert_sv.lobes.losses import AAMSoftmaxLoss
    from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
    from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank
    from speechbrain_w2vbert_sv.training.speaker_brain import SpeakerBrain

    lora = {"freeze": True, "lora_rank": 64, "lora_alpha": 128} if stage == "stage1" else {}
    # HF's initialisation of 580 M parameters is slow; values do not change the timing.
    with no_init_weights():
        backbone = W2VBertBackbone(config=Wav2Vec2BertConfig(), **lora)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if param.dim() == 1:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    model = SpeakerEmbeddingModel(W2VBertFbank(), backbone, MFAHead())
    adamw = lambda params: torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-4)  # noqa: E731
    brain = SpeakerBrain(
        modules={
            "embedding_model": model,
            "classifier": Classifier(256, lin_blocks=0, out_neurons=NUM_CLASSES),
        },
        hparams={
            "compute_cost": AAMSoftmaxLoss(margin=0.2, scale=32.0),
            "backbone_opt_class": adamw,
            "head_opt_class": adamw,
        },
        run_opts={"device": "cpu", "max_grad_norm": 1.0, "noprogressbar": True},
    )
    brain.init_optimizers()
    brain.modules.train()
    return brain


def make_batch():
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    generator = torch.Generator().manual_seed(1)
    return PaddedBatch(
        [
            {
                "id": str(i),
                "sig": 0.1 * torch.randn(SECONDS * SAMPLE_RATE, generator=generator),
                "spk_label": torch.tensor([i]),
            }
            for i in range(BATCH)
        ]
    )


def worker(stage):
    """Builds one stage, runs a warm-up step and one measured step; prints its figures."""
    import torch

    torch.set_num_threads(2)
    brain = build_brain(stage)
    trainable = sum(p.numel() for p in brain.modules.parameters() if p.requires_grad)
    batch = make_batch()
    rss_model = status_kb("VmRSS")
    brain.fit_batch(batch)  # warm-up; allocates the AdamW states
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        reset = True
    except OSError:
        reset = False
    start = time.perf_counter()
    loss = brain.fit_batch(batch)
    seconds = time.perf_counter() - start
    if not torch.isfinite(loss):
        raise RuntimeError(f"{stage}: non-finite loss {loss}")
    peak = status_kb("VmHWM")
    result = {
        "time": seconds,
        "mem_mb": (peak - rss_model) * 1024 / 1e6,
        "peak_rss_mb": peak * 1024 / 1e6,
        "trainable": trainable,
        "hwm_reset": reset,
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(stage):
    """Runs this script as a worker in a fresh process; returns its result."""
    env = {**os.environ, **MALLOC_ENV, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, __file__, "--worker", stage], env=env, capture_output=True, text=True
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"worker {stage} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def summary(values, unit):
    return f"{statistics.median(values):9.1f} {unit} [{min(values):.1f}-{max(values):.1f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="measured processes per stage")
    parser.add_argument("--worker", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")

    load_start = os.getloadavg()[0]
    print(
        f"full-size w2v-BERT 2.0 + MFA head training step, batch {BATCH} x {SECONDS} s, fp32, "
        f"2 threads; load average {load_start:.2f}",
        flush=True,
    )
    results = {stage: [] for stage in STAGES}
    for repeat in range(args.repeats):
        for stage in STAGES:
            results[stage].append(run_worker(stage))
            r = results[stage][-1]
            print(f"  {stage} #{repeat + 1}: {r['time']:.1f} s, {r['mem_mb']:.0f} MB", flush=True)
    load_end = os.getloadavg()[0]

    pairs = {}
    print("stage  | step time median [min-max] | memory beyond weights | trainable params")
    for stage in STAGES:
        times = [r["time"] for r in results[stage]]
        mems = [r["mem_mb"] for r in results[stage]]
        trainable = results[stage][0]["trainable"]
        print(f"{stage} | {summary(times, 's')} | {summary(mems, 'MB')} | {trainable / 1e6:.2f} M")
        pairs[f"{stage}_step_s"] = round(statistics.median(times), 2)
        pairs[f"{stage}_peak_mb"] = round(statistics.median(mems))
        pairs[f"{stage}_peak_rss_mb"] = round(
            statistics.median(r["peak_rss_mb"] for r in results[stage])
        )
        pairs[f"{stage}_trainable_m"] = round(trainable / 1e6, 2)
    pairs["ratio"] = round(pairs["stage2_step_s"] / pairs["stage1_step_s"], 2)
    pairs["mem_ratio"] = round(pairs["stage2_peak_mb"] / pairs["stage1_peak_mb"], 2)
    pairs["load_start"] = round(load_start, 2)
    pairs["load_end"] = round(load_end, 2)
    print(" ".join(f"{k}={v}" for k, v in pairs.items()))


if __name__ == "__main__":
    main()
