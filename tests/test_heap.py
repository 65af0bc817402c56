"""heap_keep_mb: glibc keeps freed memory for the next request (sonde/heap.py), seen as the
resident size of a real child process after it frees what it built."""

import json
import subprocess
import sys

import pytest

from sonde.heap import keep_heap

# In a child: optionally keep_heap(MB), then build ~16 MiB of 80 KiB numpy arrays (each
# under glibc's 128 KiB mmap threshold: heap blocks) and free them; print resident MiB.
CHILD = """
import json, os, sys
import numpy as np
from sonde.heap import keep_heap
took = keep_heap(float(sys.argv[1]))
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
base = rss()
blocks = [np.ones(10_000) for _ in range(200)]
peak = rss()
del blocks
print(json.dumps({"took": took, "built": peak - base, "kept": rss() - base}))
"""


def _run(mb: float) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(mb)], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_stays_with_the_process_under_the_setting():
    kept, default = _run(32), _run(0)
    assert kept["took"] and not default["took"]
    assert min(kept["built"], default["built"]) > 14
    # 16 MiB freed: under 32 MiB the heap keeps all of it for the next request; glibc's
    # own policy gives the top of the heap back
    assert kept["kept"] > kept["built"] - 1
    assert default["kept"] < default["built"] - 4


def test_no_tuning_where_the_setting_is_zero_or_the_library_has_no_mallopt(tmp_path):
    assert keep_heap(0) is False
    assert keep_heap(32, libc=str(tmp_path / "no-such-libc.so")) is False
