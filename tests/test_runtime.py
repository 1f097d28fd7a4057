"""The process's CPU settings (fmnist.core.machine.cpu_runtime): glibc keeps freed activations on the heap."""

import platform
import subprocess
import sys

import pytest

# 64 MB allocated and freed forty times: glibc's default maps and unmaps it each time (it is above the largest mmap
# threshold), so each allocation page-faults its pages in anew (15 626 of 4 KB, or 32 huge pages where transparent
# huge pages are on); a kept heap hands the same pages back
FAULTS = """
import resource, sys, torch
from fmnist.core.machine import keep_heap
if sys.argv[1] == "on":
    assert keep_heap()
torch.ones(16_000_000)  # the first allocation faults its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    torch.ones(16_000_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_heap_stops_page_faulting_each_allocation_anew():
    on, off = (
        int(subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True).stdout)
        for mode in ("on", "off")
    )
    # by default every allocation faults its pages in again; kept, the heap grows a few times while its free space
    # settles (1-3 allocations' pages seen), then every allocation reuses pages already in
    assert 4 * on <= off, (on, off)
