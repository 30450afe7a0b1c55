"""Speed and memory of a full-size w2v-BERT 2.0 forward: memory-efficient
relative-key attention (``speechbrain_w2vbert_sv.lobes.attention``) against HF's
default forward (``attn_implementation="sdpa"``).

Architecture of ``Wav2Vec2BertConfig()`` (w2v-BERT 2.0, 580.5 M parameters)
with random weights, eval mode, fp32, ``torch.set_num_threads(2)``, input
features [1, T, 160] of random values, T = 50 frames per second of audio.

- Time: one process holds the model and switches the attention path with
  ``enable_memory_efficient_attention`` between calls, interleaved
  (HF, ours, HF, ours, ...), after one warm-up call of each path at the
  shortest length; median and min-max of ``--repeats`` calls (default 3) at
  3 s and 20 s and of ``--repeats60`` calls (default 1: one HF call takes
  about 100 s here) at 60 s.
- Memory: a fresh process per (length, path) builds the model, resets its
  peak RSS (``/proc/self/clear_refs``), runs one forward and reports the peak
  RSS minus the RSS before the call (memory beyond the weights and input).
  The forward time of these cold calls is reported too (``cold*_ratio``): at
  60 s it is a second, independent speed sample.

Only one full-size process runs at a time (about 2.4 GB of weights each). The
malloc settings of ``../shared/BENCHMARKING.md`` apply to every process.
On a shared machine, busy neighbours make every 2-thread operation wait for a
core (up to 16 ms per operation was seen here), which inflates the short runs
most: compare the ratios, and the load averages printed with them.

Run from the repository root::

    python benchmarks/inference.py            # 3, 20 and 60 s (about 10 min idle)
    python benchmarks/inference.py --quick    # 3 and 20 s only

Both paths run in the same process with the same 2 threads. The outputs of the
two paths are compared at every length timed (first timed call of each).

The last line holds ``name=value`` pairs: thread counts, ``t<S>_ratio`` (median
time ours / HF), ``cpu<S>_ratio`` (the same in process CPU time),
``max_abs_diff_<S>`` (largest output difference), ``mem<S>_ratio`` (peak memory
beyond the weights, ours / HF),
``cold<S>_ratio`` (time of the cold calls, ours / HF), the absolute figures
(seconds, MB = 1e6 bytes) and the load average before and after.
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
FRAMES_PER_SECOND = 50
PATHS = ("hf", "ours")


def build_model():
    """Full-size w2v-BERT 2.0 with random weights, eval mode, fp32."""
    import torch
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel
    from transformers.initialization import no_init_weights

    # HF's initialisation of 580 M parameters takes about 30 s here; a plain
    # normal fill (unit LayerNorm scales, zero 1-D biases) takes a third of that.
    with no_init_weights():
        model = Wav2Vec2BertModel(Wav2Vec2BertConfig(attn_implementation="sdpa"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    return model.eval()


def features(seconds):
    import torch

    generator = torch.Generator().manual_seed(seconds)
    return torch.randn(1, seconds * FRAMES_PER_SECOND, 160, generator=generator)


def timed_forward(model, feats, path):
    """(wall seconds, process CPU seconds) of one forward on ``path``, and its output."""
    import torch

    from speechbrain_w2vbert_sv.lobes.attention import enable_memory_efficient_attention

    enable_memory_efficient_attention(model, enabled=path == "ours")
    with torch.inference_mode():
        start, start_cpu = time.perf_counter(), time.process_time()
        output = model(feats).last_hidden_state
        return (time.perf_counter() - start, time.process_time() - start_cpu), output


def status_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker_time(args):
    """Interleaved timing of both paths in this process."""
    import torch

    torch.set_num_threads(2)
    model = build_model()
    result = {}
    for index, seconds in enumerate(args.seconds):
        feats = features(seconds)
        if index == 0:
            for path in PATHS:
                timed_forward(model, feats, path)  # warm-up
        repeats = args.repeats60 if seconds >= 60 else args.repeats
        times = {p: [] for p in PATHS}
        cpu_times = {p: [] for p in PATHS}
        for repeat in range(repeats):
            outputs = {}
            for path in PATHS:
                (wall, cpu), outputs[path] = timed_forward(model, feats, path)
                times[path].append(wall)
                cpu_times[path].append(cpu)
            if repeat == 0:  # equality at every length timed
                diff = (outputs["hf"] - outputs["ours"]).abs().max().item()
                result[f"max_abs_diff_{seconds}"] = diff
            del outputs
        result[str(seconds)] = times
        result[f"cpu_{seconds}"] = cpu_times
    print("RESULT " + json.dumps(result), flush=True)


def worker_memory(args):
    """Peak RSS increase and time of one cold forward in this fresh process."""
    import torch

    torch.set_num_threads(2)
    model = build_model()
    feats = features(args.seconds[0])
    try:
        # "5" resets VmHWM to the current RSS (Linux >= 4.0).
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        reset = True
    except OSError:
        reset = False  # then VmHWM may still hold the peak of building the model
    before = status_kb("VmRSS")
    (seconds, _), _ = timed_forward(model, feats, args.path)
    peak = status_kb("VmHWM")
    result = {
        "mem_mb": max(0, peak - before) * 1024 / 1e6,
        "time": seconds,
        "hwm_reset": reset,
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(*worker_args):
    """Runs this script as a worker in a fresh process; returns its result."""
    command = [sys.executable, __file__, "--worker", *worker_args]
    env = {**os.environ, **MALLOC_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(
        f"worker {' '.join(worker_args)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
    )


def summary(values):
    return f"{statistics.median(values):7.2f} s [{min(values):.2f}-{max(values):.2f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 and 20 s only")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per path, 3 and 20 s")
    parser.add_argument("--repeats60", type=int, default=1, help="timed calls per path, 60 s")
    parser.add_argument("--worker", choices=["time", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.repeats60 < 1:
        raise ValueError("--repeats and --repeats60 must be at least 1")
    if args.worker == "time":
        return worker_time(args)
    if args.worker == "memory":
        return worker_memory(args)

    lengths = [3, 20] if args.quick else [3, 20, 60]
    load_start = os.getloadavg()[0]
    print(
        f"w2v-BERT 2.0 (random weights), fp32, 2 threads, lengths {lengths} s; "
        f"load average {load_start:.2f}",
        flush=True,
    )
    timing = run_worker(
        "time",
        "--seconds",
        *map(str, lengths),
        "--repeats",
        str(args.repeats),
        "--repeats60",
        str(args.repeats60),
    )
    memory = {
        (s, p): run_worker("memory", "--seconds", str(s), "--path", p)
        for s in lengths
        for p in PATHS
    }
    load_end = os.getloadavg()[0]

    pairs = {"threads": 2, "reference_threads": 2}
    for s in lengths:
        print(f"max |hf - ours| of the output at {s} s: {timing[f'max_abs_diff_{s}']:.2e}")
    print(
        "length | path | warm time median [min-max] | CPU time | cold time "
        "| peak RSS beyond weights"
    )
    for s in lengths:
        for p in PATHS:
            mem = memory[(s, p)]
            print(
                f"{s:4d} s | {p:4s} | {summary(timing[str(s)][p])} | "
                f"{statistics.median(timing[f'cpu_{s}'][p]):7.2f} s | "
                f"{mem['time']:7.2f} s | {mem['mem_mb']:8.1f} MB"
            )
        hf_t, ours_t = (statistics.median(timing[str(s)][p]) for p in PATHS)
        hf_cpu, ours_cpu = (statistics.median(timing[f"cpu_{s}"][p]) for p in PATHS)
        pairs[f"t{s}_ratio"] = ours_t / hf_t
        pairs[f"cpu{s}_ratio"] = ours_cpu / hf_cpu
        hf_mem = max(memory[(s, "hf")]["mem_mb"], 1e-9)
        pairs[f"mem{s}_ratio"] = memory[(s, "ours")]["mem_mb"] / hf_mem
        pairs[f"cold{s}_ratio"] = memory[(s, "ours")]["time"] / memory[(s, "hf")]["time"]
        pairs[f"t{s}_hf"], pairs[f"t{s}_ours"] = hf_t, ours_t
        pairs[f"mem{s}_hf_mb"] = memory[(s, "hf")]["mem_mb"]
        pairs[f"mem{s}_ours_mb"] = memory[(s, "ours")]["mem_mb"]
        pairs[f"max_abs_diff_{s}"] = timing[f"max_abs_diff_{s}"]
    if not all(m["hwm_reset"] for m in memory.values()):
        print("note: peak RSS could not be reset; memory figures include model building")
    pairs["load_start"], pairs["load_end"] = load_start, load_end
    print(" ".join(f"{k}={v:.4g}" for k, v in pairs.items()))


if __name__ == "__main__":
    main()
