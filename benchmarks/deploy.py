"""CPU deployment of a full-size w2v-BERT 2.0 + MFA speaker model: fp32, int8, pruned,
torch and ONNX Runtime, waveform in, against HF.

Architecture of ``Wav2Vec2BertConfig()`` (580.5 M encoder parameters) and the MFA head
of ``hparams/w2vbert_mfa.yaml``, random weights (normal(0, 0.02), unit LayerNorm
scales), eval mode, 2 threads (``--threads``) in torch and in ONNX Runtime. Input:
real speech from ``SV_TEST_DATA`` (default ``../shared/data``): 3 s clips made of
three 1 s Arabic Speech Commands clips of one speaker, batch 1 and batch 4.

Forms, all waveform in, embedding out:

- ``hf``: ``SeamlessM4TFeatureExtractor`` + ``Wav2Vec2BertModel`` (sdpa attention) +
  the head, sharing the weights of ``ours``;
- ``ours``: ``SpeakerEmbeddingModel`` (torch front end, memory-efficient attention);
- ``ours_int8``: ``quantize_dynamic_int8(ours)``;
- ``pruned`` / ``pruned_int8``: an 80 %-pruned encoder (random kept structures, as
  ``benchmarks/pruning.py``) with the same head, fp32 and int8;
- ``onnx`` / ``onnx_int8`` / ``onnx_pruned`` / ``onnx_pruned_int8``: the waveform-in
  graphs of ``export_onnx`` in ONNX Runtime (int8 by ``quantize_onnx``).

Time: all forms in one process, interleaved (every form at batch 1, then every form at
batch 4, per round), one warm-up round, median [min-max] of ``--repeats`` rounds
(default 5). Memory: a fresh process per form loads the saved weights, resets its peak
RSS and runs one batch-4 call: peak RSS minus RSS before the call. Size on disk: the
torch state dict (``torch.save``) or the ONNX file(s). Parity: the largest difference
between ``onnx`` and ``ours`` embeddings; cosine of int8 against fp32 embeddings of the
same model on the batch-4 and batch-1 inputs. Layer types: one encoder layer's
feed-forward block and convolution module, fp32 against int8 (the convolution module
with its pointwise convolutions quantized), 10 calls per sample.

Run from the repository root: ``python benchmarks/deploy.py`` (up to 12 GB of memory and
7 GB of disk under ``--work``, default a temporary folder; ``--small`` checks the script
in a minute). Measured once on a heavily loaded 2-core machine: 41 minutes, of which the
full-size ONNX export and quantization took 19. The last line holds ``name=value``
pairs: ``int8_speedup`` (ours fp32 / ours int8, batch 1), ``pruned_int8_speedup`` (HF
fp32 / pruned int8, batch 1), ``onnx_parity``, ``int8_cosine_min``, then the medians
and memory of every form. How to measure on a shared machine: ../shared/BENCHMARKING.md.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from _environment import PASSIVE_OPENMP_ENV, restart_with

restart_with(PASSIVE_OPENMP_ENV)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
from pruning import choose_ffn_units, keep_masks  # noqa: E402
from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig  # noqa: E402
from transformers.initialization import no_init_weights  # noqa: E402

from speechbrain_w2vbert_sv.inference.quantization import quantize_dynamic_int8  # noqa: E402
from speechbrain_w2vbert_sv.lobes.attention import enable_memory_efficient_attention  # noqa: E402
from speechbrain_w2vbert_sv.lobes.embedding_model import SpeakerEmbeddingModel  # noqa: E402
from speechbrain_w2vbert_sv.lobes.heads import MFAHead  # noqa: E402
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone  # noqa: E402
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import W2VBertFbank  # noqa: E402
from speechbrain_w2vbert_sv.pruning import GatedWav2Vec2Bert  # noqa: E402

TORCH_FORMS = ("hf", "ours", "ours_int8", "pruned", "pruned_int8")
ONNX_FORMS = ("onnx", "onnx_int8", "onnx_pruned", "onnx_pruned_int8")


def speech_batches(data):
    """[1, 48000] and [4, 48000]: 3 s of one speaker each (three 1 s clips)."""
    clips = sorted((data / "arabic_speech_commands" / "dataset").glob("*/*.flac"))
    by_speaker = {}
    for path in clips:
        by_speaker.setdefault(path.name[:8], []).append(path)
    rng = np.random.default_rng(0)
    wavs = []
    for speaker in sorted(by_speaker)[:4]:
        paths = rng.choice(by_speaker[speaker], 3, replace=False)
        wavs.append(np.concatenate([soundfile.read(p, dtype="float32")[0] for p in paths]))
    batch4 = torch.from_numpy(np.stack(wavs))
    return {1: batch4[:1].clone(), 4: batch4}


# --small: a smoke test of this script (2 layers, hidden size 64).
SMALL = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
}


def build_ours(pruned_encoder=None):
    """The model with uninitialised weights (filled or loaded by the caller); a pruned
    encoder is loaded from its folder."""
    small = os.environ.get("DEPLOY_SMALL") == "1"
    with no_init_weights():
        if pruned_encoder is None:
            config = Wav2Vec2BertConfig(
                layerdrop=0.0,
                mask_time_prob=0.0,
                attn_implementation="sdpa",
                **(SMALL if small else {}),
            )
            backbone = W2VBertBackbone(config=config)
        else:
            backbone = W2VBertBackbone(source=str(pruned_encoder))
    config = backbone.model.config
    head = MFAHead(num_hidden_states=config.num_hidden_layers + 1, input_size=config.hidden_size)
    model = SpeakerEmbeddingModel(W2VBertFbank(), backbone, head).eval()
    enable_memory_efficient_attention(model)
    return model


def randomise(model):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    return model


def prune(model, folder):
    """Saves an 80 %-pruned copy of the model's encoder (benchmarks/pruning.py's
    kept structures) to ``folder``; returns the pruned model with the same head."""
    hf = model.backbone.model
    gated = GatedWav2Vec2Bert(hf).eval()
    masks = keep_masks(
        hf.config,
        choose_ffn_units(hf.config, gated.original_num_params),
        torch.Generator().manual_seed(0),
    )
    for index, layer in enumerate(masks):
        for group, mask in layer.items():
            gated.gates[group][index].set_deterministic_values(mask)
    with torch.no_grad():
        gated.materialize().save_pretrained(folder)
    gated.remove_hooks()
    pruned = build_ours(folder)
    pruned.head.load_state_dict(model.head.state_dict())
    return pruned


class HFReference(torch.nn.Module):
    """HF's extractor and encoder forward, then the head (weights of ``model``)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.extractor = SeamlessM4TFeatureExtractor()

    def forward(self, wavs):
        inputs = self.extractor(
            list(wavs.numpy()), sampling_rate=16000, padding=True, return_tensors="pt"
        )
        enable_memory_efficient_attention(self.model, enabled=False)
        try:
            out = self.model.backbone.model(
                inputs["input_features"],
                attention_mask=inputs["attention_mask"],
                output_hidden_states=True,
            )
        finally:
            enable_memory_efficient_attention(self.model)
        mask = inputs["attention_mask"]
        lengths = mask.sum(dim=1) / mask.shape[1]
        return self.model.head(torch.stack(out.hidden_states), lengths)[:, 0]


class Runner:
    """Calls a form on a waveform batch, returning [B, E] embeddings."""

    def __init__(self, forms):
        self.forms = forms

    def __call__(self, name, wavs):
        form = self.forms[name]
        if name == "hf":
            return form(wavs)
        if name.startswith("onnx"):
            return form(wavs)[:, 0]
        return form(wavs, None)[:, 0]


def file_size(path):
    path = pathlib.Path(path)
    extra = pathlib.Path(str(path) + ".data")
    return path.stat().st_size + (extra.stat().st_size if extra.exists() else 0)


def status_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def load_form(name, work, threads):
    """A form rebuilt from the files of ``work`` (memory workers)."""
    if name.startswith("onnx"):
        from speechbrain_w2vbert_sv.inference.onnx import ONNXEmbeddingModel

        return ONNXEmbeddingModel(work / f"{name}.onnx", num_threads=threads)
    base = "pruned" if name.startswith("pruned") else "ours"
    model = build_ours(work / "pruned_encoder" if base == "pruned" else None)
    if name.endswith("int8"):
        model = quantize_dynamic_int8(model)
    state = torch.load(
        work / f"{name if name != 'hf' else 'ours'}.pt", mmap=True, weights_only=True
    )
    model.load_state_dict(state)
    return HFReference(model) if name == "hf" else model


def worker_memory(args):
    torch.set_num_threads(args.threads)
    work = pathlib.Path(args.work)
    wavs = speech_batches(pathlib.Path(args.data))[4]
    with torch.inference_mode():
        runner = Runner({args.worker_form: load_form(args.worker_form, work, args.threads)})
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # VmHWM := current RSS
        before = status_kb("VmRSS")
        runner(args.worker_form, wavs)
        peak = status_kb("VmHWM")
    print("RESULT " + json.dumps({"mem_mb": max(0, peak - before) * 1024 / 1e6}), flush=True)


def run_memory_worker(name, args, work):
    command = [
        sys.executable,
        __file__,
        "--worker_form",
        name,
        "--work",
        str(work),
        "--data",
        str(args.data),
        "--threads",
        str(args.threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])["mem_mb"]
    raise RuntimeError(f"memory worker {name} failed:\n{done.stderr[-3000:]}")


def layer_types(model, repeats):
    """Median time of one encoder layer's feed-forward block (linear layers) and
    convolution module (pointwise convolutions), fp32 against int8, on [1, 150, D]:
    the measurement behind which layer types are quantized by default."""
    layer = model.backbone.model.encoder.layers[0]
    x = torch.randn(1, 150, layer.ffn1.intermediate_dense.in_features)
    blocks = {
        "linear": (layer.ffn1, quantize_dynamic_int8(layer.ffn1, pointwise_conv=False)),
        "pointwise_conv": (
            layer.conv_module,
            quantize_dynamic_int8(layer.conv_module, pointwise_conv=True),
        ),
    }
    times = {(k, i): [] for k in blocks for i in range(2)}
    with torch.inference_mode():
        for round_index in range(repeats + 1):
            for kind, pair in blocks.items():
                for i, block in enumerate(pair):
                    begin = time.perf_counter()
                    for _ in range(10):
                        block(x)
                    if round_index:
                        times[(kind, i)].append(time.perf_counter() - begin)
    return {
        kind: statistics.median(times[(kind, 0)]) / statistics.median(times[(kind, 1)])
        for kind in blocks
    }


def cosine_min(a, b):
    return torch.nn.functional.cosine_similarity(a, b).min().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (at least 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=None, help="folder for saved models (default: temporary)")
    default_data = os.environ.get("SV_TEST_DATA", REPO_ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--data",
        default=default_data,
        help="real speech folder (default: SV_TEST_DATA or ../shared/data)",
    )
    parser.add_argument("--no_memory", action="store_true", help="skip the memory workers")
    parser.add_argument(
        "--small",
        action="store_true",
        help="a small encoder: a smoke test of the script, not a benchmark",
    )
    parser.add_argument("--worker_form", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.small:
        os.environ["DEPLOY_SMALL"] = "1"  # read by the memory workers too
    if args.worker_form:
        return worker_memory(args)
    if args.repeats < 5:
        raise ValueError("--repeats must be at least 5")
    from speechbrain_w2vbert_sv.inference.onnx import (
        ONNXEmbeddingModel,
        export_onnx,
        quantize_onnx,
    )

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory() if args.work is None else None
    work = pathlib.Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    size = "SMALL encoder (smoke test)" if args.small else "full-size w2v-BERT 2.0"
    print(
        f"{size} + MFA head (random weights), {args.threads} threads, "
        f"load average {load_start:.2f}",
        flush=True,
    )
    batches = speech_batches(pathlib.Path(args.data))

    start = time.perf_counter()
    ours = randomise(build_ours())
    with torch.no_grad():  # non-trivial BatchNorm statistics of the pooling
        ours.head.pooling.attention[2].running_var.uniform_(0.5, 2.0)
    pruned = prune(ours, work / "pruned_encoder")
    forms = {
        "hf": HFReference(ours),
        "ours": ours,
        "ours_int8": quantize_dynamic_int8(ours),
        "pruned": pruned,
        "pruned_int8": quantize_dynamic_int8(pruned),
    }
    sizes = {}
    for name in TORCH_FORMS[1:]:
        torch.save(forms[name].state_dict(), work / f"{name}.pt")
        sizes[name] = file_size(work / f"{name}.pt")
    print(f"built and saved the torch forms in {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    for name, model in (("onnx", ours), ("onnx_pruned", pruned)):
        export_onnx(model, work / f"{name}.onnx", waveform=True)
        quantize_onnx(work / f"{name}.onnx", work / f"{name}_int8.onnx")
    for name in ONNX_FORMS:
        forms[name] = ONNXEmbeddingModel(work / f"{name}.onnx", num_threads=args.threads)
        sizes[name] = file_size(work / f"{name}.onnx")
    print(
        f"exported and quantized the ONNX forms in {time.perf_counter() - start:.0f} s", flush=True
    )

    layer_speedups = layer_types(ours, args.repeats)
    print(
        "int8 speed-up of one layer's blocks: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in layer_speedups.items()),
        flush=True,
    )
    run = Runner(forms)
    names = TORCH_FORMS + ONNX_FORMS
    times = {(n, b): [] for n in names for b in batches}
    outputs = {}
    with torch.inference_mode():
        for round_index in range(args.repeats + 1):  # round 0: warm-up
            for batch, wavs in batches.items():
                for name in names:
                    begin = time.perf_counter()
                    out = run(name, wavs)
                    elapsed = time.perf_counter() - begin
                    if round_index == 0:
                        outputs[(name, batch)] = out
                    else:
                        times[(name, batch)].append(elapsed)
            print(f"round {round_index} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    memory = {} if args.no_memory else {n: run_memory_worker(n, args, work) for n in names}
    load_end = os.getloadavg()[0]

    def out(name):
        return torch.cat([outputs[(name, b)] for b in batches])

    parity = (out("onnx") - out("ours")).abs().max().item()
    cosines = {
        "ours_int8": cosine_min(out("ours_int8"), out("ours")),
        "onnx_int8": cosine_min(out("onnx_int8"), out("onnx")),
        "pruned_int8": cosine_min(out("pruned_int8"), out("pruned")),
        "onnx_pruned_int8": cosine_min(out("onnx_pruned_int8"), out("onnx_pruned")),
    }
    median = {k: statistics.median(v) for k, v in times.items()}
    print(
        "form | batch 1 x 3 s: median [min-max] | batch 4 x 3 s | peak RSS beyond "
        "weights (batch 4) | size on disk"
    )
    for name in names:
        cells = [
            f"{median[(name, b)]:6.3f} s [{min(times[(name, b)]):.3f}-{max(times[(name, b)]):.3f}]"
            for b in batches
        ]
        mem = f"{memory[name]:7.0f} MB" if name in memory else "      -"
        size = f"{sizes[name] / 1e6:7.0f} MB" if name in sizes else "  (ours)"
        print(f"{name:16s} | {cells[0]} | {cells[1]} | {mem} | {size}")
    print(
        f"max |onnx - ours| = {parity:.2e}; int8 cosine min: "
        + ", ".join(f"{k} {v:.5f}" for k, v in cosines.items())
    )
    pairs = {
        "int8_speedup": median[("ours", 1)] / median[("ours_int8", 1)],
        "pruned_int8_speedup": median[("hf", 1)] / median[("pruned_int8", 1)],
        "onnx_parity": parity,
        "int8_cosine_min": min(cosines["ours_int8"], cosines["onnx_int8"]),
        "int8_speedup_b4": median[("ours", 4)] / median[("ours_int8", 4)],
        "pruned_int8_speedup_b4": median[("hf", 4)] / median[("pruned_int8", 4)],
        "onnx_int8_speedup": median[("onnx", 1)] / median[("onnx_int8", 1)],
        "onnx_pruned_int8_speedup": median[("hf", 1)] / median[("onnx_pruned_int8", 1)],
        "linear_int8_speedup": layer_speedups["linear"],
        "pointwise_conv_int8_speedup": layer_speedups["pointwise_conv"],
    }
    for name in names:
        for b in batches:
            pairs[f"t_{name}_b{b}"] = median[(name, b)]
        if name in memory:
            pairs[f"mem_{name}_mb"] = memory[name]
    pairs["load_start"], pairs["load_end"] = load_start, load_end
    print(" ".join(f"{k}={v:.4g}" for k, v in pairs.items()))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
