"""Peak RSS of a command, measured so that the measuring process's own size does not leak into the number.

Linux carries ``ru_maxrss`` across fork + exec: a child started from a 2 GB pytest process reports at least 2 GB,
whatever it really used (tests/test_memory.py failed in CI that way while passing alone). So the command is started
by a small Python wrapper, which forks it from its own few-MB address space and reports the command's peak from
``RUSAGE_CHILDREN``. Used by tests/test_memory.py, benchmarks/memory.py and benchmarks/video_speed.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

_WRAPPER = """import resource, subprocess, sys
status = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(status)
"""


def run_with_peak_rss(cmd: list[str], env: dict[str, str] | None = None, stdout=None,
                      stderr=None) -> tuple[int, float]:
    """Run ``cmd`` to its end; return (exit status, its peak RSS in MB)."""
    fd, report = tempfile.mkstemp(prefix="ferkit-peak-rss-")
    os.close(fd)
    try:
        status = subprocess.call([sys.executable, "-c", _WRAPPER, report, *cmd], env=env, stdout=stdout, stderr=stderr)
        with open(report) as f:
            text = f.read()
        return status, int(text) / 1024 if text else float("nan")  # ru_maxrss is in KiB on Linux
    finally:
        os.unlink(report)
