"""Releasing the resident pages of a memory-mapped checkpoint (the import's peak memory)."""

import os
import pathlib
import time

import pytest
import torch

from speechbrain_w2vbert_sv.inference.mapped_pages import releasing_mapped_pages

SMAPS = pathlib.Path("/proc/self/smaps")
pytestmark = pytest.mark.skipif(not SMAPS.is_file(), reason="Linux /proc/self/smaps only")
NUMEL = 1 << 22  # 16 MB of float32


def resident_bytes(path):
    """Resident bytes of this process's mappings of ``path``."""
    target, total, inside = os.path.realpath(path), 0, False
    for line in SMAPS.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if "-" in fields[0] and not fields[0].endswith(":"):
            inside = len(fields) == 6 and fields[5] == target
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


@pytest.fixture
def mapped(tmp_path):
    path = tmp_path / "weights.pt"
    reference = torch.randn(NUMEL, generator=torch.Generator().manual_seed(0))
    torch.save({"w": reference}, path)
    weights = torch.load(path, mmap=True)["w"]
    assert torch.equal(weights, reference)  # touches every page
    assert resident_bytes(path) >= weights.nbytes
    return path, weights, reference


def test_pages_are_released_while_the_block_runs_and_read_again(mapped):
    path, weights, reference = mapped
    with releasing_mapped_pages(path, interval=0.01):
        deadline = time.monotonic() + 10
        while resident_bytes(path) > weights.nbytes // 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert resident_bytes(path) <= weights.nbytes // 10
        assert torch.equal(weights, reference)
    assert resident_bytes(path) <= weights.nbytes // 10
    assert torch.equal(weights, reference)


def test_a_mapping_written_to_is_left_alone(mapped):
    path, weights, reference = mapped
    weights[0] = 7.0  # a private copy of that page: dropping it would lose the write
    with releasing_mapped_pages(path, interval=0.01):
        time.sleep(0.05)
    assert weights[0] == 7.0
    assert torch.equal(weights[1:], reference[1:])
