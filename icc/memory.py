"""Peak memory of the process that does a piece of work.

The peak resident set size (VmHWM). On Linux the peak is reset first (`/proc/self/clear_refs`),
so it is the peak during that work alone, including what the process already held (interpreter,
libraries, inputs); elsewhere it is the process's lifetime peak (`ru_maxrss`).
"""

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> None:
    """Start a new peak-memory window for this process (Linux; a no-op where unsupported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (since `reset_peak_rss` on Linux; else since the process started)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB on Linux
