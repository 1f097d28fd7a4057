"""The process's CPU settings (fmnist.loop.cpu_runtime): glibc keeps freed activations on the heap."""

import platform
import subprocess
import sys

import pytest

# 64 MB allocated and freed five times: glibc's default maps and unmaps it each time (it is above the largest mmap
# threshold), so each allocation page-faults its 15 626 pages in anew; a kept heap hands the same pages back
FAULTS = """
import resource, sys, torch
from fmnist.loop import keep_heap
if sys.argv[1] == "on":
    assert keep_heap()
torch.ones(16_000_000)  # the heap, when kept, grows to it once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.ones(16_000_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_heap_stops_page_faulting_each_allocation_anew():
    on, off = (int(subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                                  check=True).stdout) for mode in ("on", "off"))  # fmt: skip
    assert off > 4 * 15_000  # every allocation faulted in again (15 626 pages each)
    assert on < 2 * 15_626  # at most one allocation's pages, then the same pages again
