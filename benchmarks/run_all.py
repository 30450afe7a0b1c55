"""Runs every benchmark and writes their figures to ``benchmarks/RESULTS.md``.

Each benchmark runs in its own process, one at a time, with the command shown
in the results file; its output is kept whole, and the ``name=value`` pairs of
its last line are tabulated. The file also records the date, the machine's CPU
count, torch's version and default thread count (every benchmark fixes its
own: 2 unless its command says otherwise), the load average before and after
each benchmark, and the git commit. The README's speed and correctness figures
are taken from this file. How to measure on shared machines:
``../shared/BENCHMARKING.md``.

The results of each benchmark are also kept in ``benchmarks/results.json``, so
``--only`` reruns some benchmarks and rewrites the file with the others' last
results (each with its own date and load).

Run from the repository root (next to ``../shared``; about 30-35 min on an idle
2-core machine)::

    python benchmarks/run_all.py
    python benchmarks/run_all.py --only scoring frontend
    python benchmarks/run_all.py --quick    # shorter settings, a smoke check

The last line holds ``name=value`` pairs: ``benchmarks`` (how many ran),
``failed`` (how many exited with an error), ``total_s``.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_MD = REPO_ROOT / "benchmarks" / "RESULTS.md"
RESULTS_JSON = REPO_ROOT / "benchmarks" / "results.json"

# name -> (arguments for the record, arguments with --quick). The record's
# settings are those whose figures the README quotes.
BENCHMARKS = {
    "frontend": ([], ["--repeats", "5"]),
    "scoring": ([], ["--repeats", "1", "--reference-trials", "100"]),
    "dataloader": ([], ["--crops", "16"]),
    "extraction": ([], ["--files", "16", "--repeats", "1"]),
    "pruning": ([], ["--repeats", "1", "--batch", "1"]),
    "train_step": (["--repeats", "1"], ["--repeats", "1"]),
    "inference": ([], ["--quick", "--repeats", "1"]),
    "interop": ([], []),
    "deploy": (["--repeats", "5"], ["--small"]),
    "speechbrain_recipe": ([], ["--repeats", "1"]),
    "diarization": ([], ["--quick"]),
    # After diarization: it reuses the teacher that diarization.py trains and caches.
    "identification": ([], ["--quick"]),
    "shards": ([], ["--crops", "16", "--repeats", "1", "--clips", "300"]),
}


def git_commit():
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return done.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def last_line_pairs(stdout):
    """The ``name=value`` pairs of the last non-empty line of a benchmark's output."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return {}
    pairs = {}
    for field in lines[-1].split():
        name, sep, value = field.partition("=")
        if sep:
            pairs[name] = value
    return pairs


def run_benchmark(name, arguments, timeout):
    """Runs one benchmark; returns its record (command, output, figures, load)."""
    command = [sys.executable, f"benchmarks/{name}.py", *arguments]
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
        )
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as error:
        returncode = "timeout"
        stdout = error.stdout.decode() if isinstance(error.stdout, bytes) else error.stdout or ""
        stderr = f"stopped after {timeout} s"
    elapsed = time.perf_counter() - start
    return {
        "command": " ".join(["python", *command[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(elapsed, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "returncode": returncode,
        "stdout": stdout,
        "stderr_tail": stderr[-2000:] if returncode != 0 else "",
        "figures": last_line_pairs(stdout) if returncode == 0 else {},
    }


def environment():
    import torch

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "machine": platform.processor() or platform.machine(),
    }


def write_markdown(env, records):
    lines = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run_all.py`; do not edit by hand. Every figure",
        "below is printed by the command above it (the last line of its output holds",
        "the `name=value` pairs of the table). How these machines are measured:",
        "`../shared/BENCHMARKING.md`.",
        "",
        f"- written: {env['date']}, commit {env['commit']}",
        f"- torch {env['torch']}, Python {env['python']}, {env['cpu_count']} CPUs "
        f"({env['machine']}), torch's default thread count {env['torch_default_threads']} "
        "(each benchmark sets its own, printed in its output), CUDA: "
        f"{env['cuda']}",
        "- load average (1, 5, 15 min) before and after each benchmark is listed with it;",
        "  a load above the CPU count means other work shared the cores.",
        "",
        "| benchmark | date | wall time | load before | load after | status |",
        "|---|---|---|---|---|---|",
    ]
    for name, record in records.items():
        status = "ok" if record["returncode"] == 0 else f"FAILED ({record['returncode']})"
        lines.append(
            f"| [`{name}`](#{name}) | {record['date']} | {record['seconds']:.0f} s | "
            f"{' / '.join(map(str, record['load_before']))} | "
            f"{' / '.join(map(str, record['load_after']))} | {status} |"
        )
    for name, record in records.items():
        lines += ["", f"## {name}", "", "```bash", record["command"], "```", ""]
        if record["figures"]:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| `{k}` | {v} |" for k, v in record["figures"].items()]
            lines.append("")
        lines += ["Output:", "", "```text", record["stdout"].rstrip(), "```"]
        if record["stderr_tail"]:
            lines += ["", "Error output (tail):", "", "```text", record["stderr_tail"], "```"]
    RESULTS_MD.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--quick", action="store_true", help="shorter settings (smoke check)")
    parser.add_argument(
        "--timeout", type=float, default=1500, help="seconds allowed to each benchmark"
    )
    args = parser.parse_args()

    records = {}
    if args.only and RESULTS_JSON.is_file():
        records = json.loads(RESULTS_JSON.read_text(encoding="utf-8"))["benchmarks"]
    env = environment()
    start = time.perf_counter()
    failed = 0
    for name in args.only or BENCHMARKS:
        arguments = BENCHMARKS[name][1 if args.quick else 0]
        print(f"running {name} ...", flush=True)
        record = run_benchmark(name, arguments, args.timeout)
        if args.quick:
            record["command"] += "   # --quick settings: not the README's figures"
        records[name] = record
        failed += record["returncode"] != 0
        figures = " ".join(f"{k}={v}" for k, v in record["figures"].items())
        print(f"  {record['seconds']:.0f} s, exit {record['returncode']}: {figures}", flush=True)
        # Written after each benchmark, so an interrupted run keeps what it measured.
        records = {k: records[k] for k in BENCHMARKS if k in records}
        RESULTS_JSON.write_text(
            json.dumps({"environment": env, "benchmarks": records}, indent=1), encoding="utf-8"
        )
        write_markdown(env, records)
    total = time.perf_counter() - start
    print(f"wrote {RESULTS_MD.relative_to(REPO_ROOT)} ({total / 60:.1f} min)")
    print(f"benchmarks={len(args.only or BENCHMARKS)} failed={failed} total_s={total:.0f}")


if __name__ == "__main__":
    main()
