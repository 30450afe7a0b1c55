"""Process settings that the benchmarks share (how to measure: ../shared/BENCHMARKING.md).

Not a benchmark itself: ``run_all.py`` lists the scripts without a leading underscore.
The settings are read when glibc's allocator and OpenMP start, so a benchmark applies
them by restarting itself (``restart_with``) before it imports torch, or passes them to
the worker processes it starts.
"""

import os
import sys

# Fresh multi-MB buffers fault pages erratically on these shared machines; keeping
# freed memory in the process narrows the spread (same settings for both sides).
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "MALLOC_TOP_PAD_": "268435456",
}
# OpenMP threads that sleep instead of spinning while they wait: on an oversubscribed
# machine spinning made both pruning-benchmark models 2-4x slower at 2 threads and hid
# most of the pruning speed-up (1.9x vs 4.9x).
PASSIVE_OPENMP_ENV = {**MALLOC_ENV, "OMP_WAIT_POLICY": "PASSIVE"}


def restart_with(settings, keep_user_values=False):
    """Re-executes the running script with ``settings`` added to its environment,
    unless they are in place already.

    Arguments
    ---------
    settings : dict
        Environment variables and their values.
    keep_user_values : bool
        Whether a variable the user set keeps the user's value.

    Returns
    -------
    dict
        The settings in force (the function returns only when nothing was missing).
    """
    wanted = {k: v for k, v in settings.items() if not (keep_user_values and k in os.environ)}
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **wanted})
    return {k: os.environ[k] for k in settings}
