"""Host malloc on a CPU: freed memory is kept for reuse instead of being unmapped and
faulted in again every training step."""
import json
import subprocess
import sys

import pytest

CHILD = """
import json, resource, torch
from cifar_lib.device import keep_freed_memory, malloc_mode
kept = keep_freed_memory()
for _ in range(10):                           # first touches: the heap grows to fit
    torch.empty(16 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):                           # what a training step does with activations
    torch.empty(16 << 20).fill_(1.0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": kept, "mode": malloc_mode(), "faults": faults}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "CIFAR_CPU_MALLOC": mode})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
@pytest.mark.slow
def test_kept_freed_memory_is_reused_without_page_faults():
    default, kept = _run("default"), _run("keep")
    assert default == {**default, "kept": False, "mode": "default"}
    assert kept["kept"] and kept["mode"] == "glibc, freed memory kept"
    # 10 x 64 MiB: by default each is mapped afresh (16,384 faults of 4 KiB); kept, the
    # grown heap is reused
    assert default["faults"] > 10 * 10_000
    assert kept["faults"] < default["faults"] / 20, (kept, default)
