"""Size, MACs and CPU speed of an 80 %-pruned w2v-BERT 2.0 encoder.

Full-size architecture (``Wav2Vec2BertConfig()`` defaults, random weights).
Gates are set to emulate the end of pruning at an 80 % target: in every layer
a random subset of 4 of 16 heads, 1/4 of the conv channels and as many FFN
units as make the expected sparsity 0.8 are kept (gate 1), the rest dropped
(gate 0). The gated model is materialised, then the pruned model is timed
against the original (the same model with its gates removed) on a batch of
3 s clips, interleaved, after a warm-up, median (min-max) of the repeats,
2 threads (``--threads``), fp32, sdpa attention.

Both models run in the same process with the same threads; the CPU-time
speed-up (``cpu_speedup``) is printed beside the wall-clock one (``speedup``).
How to measure on shared machines: ``../shared/BENCHMARKING.md``.

Run from the repository root: ``python benchmarks/pruning.py [--batch 4]``.
Peak memory about 4.5 GB.
"""

import argparse
import os
import statistics
import sys
import time

from _environment import PASSIVE_OPENMP_ENV, restart_with

restart_with(PASSIVE_OPENMP_ENV)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel  # noqa: E402

from speechbrain_w2vbert_sv.pruning import (  # noqa: E402
    GatedWav2Vec2Bert,
    count_encoder_macs,
    count_encoder_params,
)

TARGET_SPARSITY = 0.8


def keep_masks(config, ffn_units, generator):
    """0/1 gate values: random subsets of fixed size in every layer."""
    sizes = {
        "heads": config.num_attention_heads // 4,
        "ffn1": ffn_units,
        "ffn2": ffn_units,
        "conv": config.hidden_size // 4,
    }
    full = {
        "heads": config.num_attention_heads,
        "ffn1": config.intermediate_size,
        "ffn2": config.intermediate_size,
        "conv": config.hidden_size,
    }
    masks = []
    for _ in range(config.num_hidden_layers):
        layer = {}
        for group, kept in sizes.items():
            mask = torch.zeros(full[group])
            mask[torch.randperm(full[group], generator=generator)[:kept]] = 1.0
            layer[group] = mask
        masks.append(layer)
    return masks


def choose_ffn_units(config, original):
    """Largest FFN width (units per FFN, same in every layer) whose
    sparsity still reaches the target."""

    def sparsity(units):
        masks = keep_masks(config, units, torch.Generator().manual_seed(0))
        return 1 - count_encoder_params(config, masks).item() / original

    low, high = 0, config.intermediate_size
    while low < high:
        mid = (low + high + 1) // 2
        if sparsity(mid) >= TARGET_SPARSITY:
            low = mid
        else:
            high = mid - 1
    return low


def num_params(model):
    return sum(p.numel() for n, p in model.named_parameters() if n != "masked_spec_embed")


def time_forward(model, feats):
    """(wall seconds, process CPU seconds) of one forward."""
    start, start_cpu = time.perf_counter(), time.process_time()
    model(feats)
    return time.perf_counter() - start, time.process_time() - start_cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="clips per batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = Wav2Vec2BertConfig(layerdrop=0.0, mask_time_prob=0.0, attn_implementation="sdpa")
    model = Wav2Vec2BertModel(config).eval()
    gated = GatedWav2Vec2Bert(model).eval()
    ffn_units = choose_ffn_units(config, gated.original_num_params)
    masks = keep_masks(config, ffn_units, torch.Generator().manual_seed(0))
    for index, layer in enumerate(masks):
        for group, mask in layer.items():
            gated.gates[group][index].set_deterministic_values(mask)
    expected_sparsity = gated.expected_sparsity().item()

    feats = torch.randn(args.batch, 150, 160)  # 3 s clips: 50 frames/s
    with torch.inference_mode():
        gated_out = gated(feats).last_hidden_state
        pruned = gated.materialize().eval()
        max_diff = (pruned(feats).last_hidden_state - gated_out).abs().max().item()
    gated.remove_hooks()
    del gated_out

    params = {"original": num_params(model), "pruned": num_params(pruned)}
    macs = {"original": count_encoder_macs(model), "pruned": count_encoder_macs(pruned)}
    nets = {"original": model, "pruned": pruned}
    times = {name: [] for name in nets}
    cpu_times = {name: [] for name in nets}
    with torch.inference_mode():
        for net in nets.values():
            time_forward(net, feats)  # warm-up
        for _ in range(args.repeats):
            for name, net in nets.items():
                wall, cpu = time_forward(net, feats)
                times[name].append(wall)
                cpu_times[name].append(cpu)

    kept = {group: int(mask.sum()) for group, mask in masks[0].items()}
    print(
        f"kept per layer: {kept['heads']}/{config.num_attention_heads} heads, "
        f"{kept['ffn1']}/{config.intermediate_size} units per FFN, "
        f"{kept['conv']}/{config.hidden_size} conv channels"
    )
    print(
        f"expected sparsity from the gates: {expected_sparsity:.4f}; "
        f"max |gated - pruned| = {max_diff:.2e}"
    )
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(
            f"{name:9s} params {params[name] / 1e6:8.2f} M  "
            f"MACs/s audio {macs[name] / 1e9:6.2f} G  forward [{args.batch}x3 s] "
            f"median {median[name]:.3f} s (min {min(t):.3f}, max {max(t):.3f})"
        )
    cpu_median = {name: statistics.median(t) for name, t in cpu_times.items()}
    print(
        f"CPU time: original {cpu_median['original']:.3f} s, pruned {cpu_median['pruned']:.3f} s; "
        f"both with {args.threads} threads"
    )
    figures = {
        "cpu_speedup": f"{cpu_median['original'] / cpu_median['pruned']:.2f}",
        "reference_threads": args.threads,
        "param_ratio": f"{params['pruned'] / params['original']:.4f}",
        "speedup": f"{median['original'] / median['pruned']:.2f}",
        "mac_ratio": f"{macs['pruned'] / macs['original']:.4f}",
        "params_original_M": f"{params['original'] / 1e6:.2f}",
        "params_pruned_M": f"{params['pruned'] / 1e6:.2f}",
        "gmacs_per_s_original": f"{macs['original'] / 1e9:.2f}",
        "gmacs_per_s_pruned": f"{macs['pruned'] / 1e9:.2f}",
        "time_original_s": f"{median['original']:.3f}",
        "time_pruned_s": f"{median['pruned']:.3f}",
        "expected_sparsity": f"{expected_sparsity:.4f}",
        "max_abs_diff": f"{max_diff:.2e}",
        "batch": args.batch,
        "clip_s": 3,
        "threads": args.threads,
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
