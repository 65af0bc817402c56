"""How much freed memory the C heap keeps for the next request (glibc's malloc).

glibc gives the top of a heap back to the OS once more than 128 KiB of it is free,
raising that threshold only as blocks larger than it come and go. A metrics question
builds a few MiB of numpy temporaries in blocks under it and drops them: given back
after each answer, they were faulted in again by the next one, ~500 page faults and
~1 ms of a one-hour GPU question (docs/benchmarks.md, "The C heap between requests").
With ``heap_keep_mb`` a heap gives its top back only once more than that much of it is
free (the freed temporaries of a question stay for the next), and blocks up to that
size come from the heaps instead of being mapped afresh each time.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_heap(mb: float, libc: str | None = None) -> bool:
    """Have ``libc`` (the process's C library when None) keep up to ``mb`` MiB free at
    each heap's top. Returns whether it took the setting: False for 0, or for a C
    library without ``mallopt``, whose own policy then stays."""
    if mb <= 0:
        return False
    try:
        lib = ctypes.CDLL(libc or ctypes.util.find_library("c"))
        mallopt = lib.mallopt
    except (OSError, TypeError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    size = int(mb * 2**20)
    return bool(mallopt(M_TRIM_THRESHOLD, size)) and bool(mallopt(M_MMAP_THRESHOLD, size))
