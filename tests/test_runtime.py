"""The process's machine (fmnist.core.machine): glibc keeps freed activations on the heap; the CPU's name says which."""

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


@pytest.mark.parametrize(
    "cpuinfo, name",
    [
        # a VM's EPYC without its model number: Zen 1 and Zen 3 told apart by family and model
        ("model name\t: AMD EPYC\ncpu family\t: 23\nmodel\t\t: 1\n", "AMD EPYC (family 23 model 1)"),
        ("cpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n", "AMD EPYC (family 25 model 1)"),
        # a name with its model number says it already
        (
            "model name\t: Intel(R) Xeon(R) Platinum 8481C CPU\ncpu family\t: 6\nmodel\t\t: 143\n",
            "Intel(R) Xeon(R) Platinum 8481C CPU",
        ),
    ],
)
def test_cpu_name_tells_generations_apart_where_the_name_does_not(tmp_path, monkeypatch, cpuinfo, name):
    from fmnist.core import machine

    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "cpuinfo")
    assert machine.cpu_name() == name
