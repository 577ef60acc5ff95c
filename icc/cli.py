"""The `icc` command: `icc <pipeline> [hydra overrides]`, e.g. `icc cluster clusterer.k=12`.

The pipeline runs in a child process (`python -m pipelines.<name>`), so that a run whose Ray driver
dies without Python's shutdown (its core worker exits from C++ when the raylet dies, or a signal
kills it) still ends with one line naming the stage it was in (`icc.pipeline.STAGE_FILE`), instead
of Ray's log lines alone. SIGINT and SIGTERM sent to `icc` go to the child, whose exit code (130,
143, 2, ...) `icc` keeps; when `icc` itself dies (SIGKILL, the OOM killer), the child is SIGKILLed
with it (Linux), as the run would have been without the child.

The child's stderr passes through `icc` unchanged but for Ray's known false alarms (NOISE); its
progress lines are drawn as bars when `icc`'s own stderr is a terminal (TTY_ENV).
"""

import ast
import contextlib
import ctypes
import os
import pkgutil
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pipelines
from icc.errors import STOP_SIGNALS
from icc.pipeline import STAGE_FILE
from icc.progress import TTY_ENV

# Ray's lines that every run prints and that say nothing about it: the driver's core worker logs an
# error for each Ray Data actor pool although nothing is wrong (ray-project/ray#57733, open).
NOISE = re.compile(rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store "
                   rb"and max_restarts > 0")
FORWARD_JOIN_S = 5  # seconds to wait for the child's last stderr bytes once it has exited

BEFORE_STAGES = "start-up"  # the stage file's text until the first stage begins
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): the signal a process gets when its parent dies


def available() -> dict[str, str]:
    """{pipeline name: first line of its docstring} for every module in `pipelines/`, read from the
    source, so that `icc --help` does not import torch and Ray."""
    found = {}
    for module in pkgutil.iter_modules(pipelines.__path__):
        source = Path(module.module_finder.path, f"{module.name}.py").read_text()
        doc = (ast.get_docstring(ast.parse(source)) or "").strip()
        found[module.name] = doc.splitlines()[0] if doc else ""
    return found


def main() -> None:
    names = available()
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: icc <pipeline> [key=value ...] [--cfg job] [--help]\n\npipelines:")
        for name, summary in names.items():
            print(f"  {name:<12} {summary}")
        print("\n`icc <pipeline> --help` lists its config groups; `--cfg job` prints the resolved config.")
        return
    name = sys.argv[1]
    if name not in names:
        print(f"icc: error: unknown pipeline '{name}' (choose from {', '.join(names)})", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_pipeline(name, sys.argv[2:]))


def run_pipeline(name: str, args: list[str]) -> int:
    """Run `pipelines.<name>` with `args` in a child process; its exit code, or 1 after one line
    `icc: error: Ray died during stage <stage> (...)` when it ended without Python's shutdown."""
    fd, stage_file = tempfile.mkstemp(prefix="icc-stage-")
    os.write(fd, BEFORE_STAGES.encode())
    os.close(fd)
    try:
        # Its own process group: a Ctrl-C in the terminal reaches it once, forwarded from here.
        env = {**os.environ, STAGE_FILE: stage_file, **({TTY_ENV: "1"} if sys.stderr.isatty() else {})}
        child = subprocess.Popen([sys.executable, "-m", f"pipelines.{name}", *args], env=env, process_group=0,
                                 stderr=subprocess.PIPE, preexec_fn=_dies_with(os.getpid()))
        forward = threading.Thread(target=forward_stderr, args=(child.stderr.fileno(), sys.stderr.buffer), daemon=True)
        forward.start()
        for signum in STOP_SIGNALS:
            signal.signal(signum, lambda signum, frame: child.send_signal(signum))
        code = child.wait()
        forward.join(FORWARD_JOIN_S)  # a Ray process the child started may hold the pipe open
        if code == 0 or not os.path.exists(stage_file):  # Python shut down: the child said what happened
            return code
        if -code in STOP_SIGNALS:  # a second SIGINT / SIGTERM, which kills at once
            print(f"icc: stopped by {signal.Signals(-code).name}", file=sys.stderr)
            return 128 - code
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        stage = Path(stage_file).read_text()
        print(f"icc: error: Ray died during stage {stage} (the pipeline's process {how} without Python's shutdown: "
              "its raylet or a node it needed died, or it crashed; Ray's lines above say which)", file=sys.stderr)
        return 1
    finally:
        Path(stage_file).unlink(missing_ok=True)


def forward_stderr(source: int, target) -> None:
    """Copy the bytes read from file descriptor `source` to the binary stream `target` as they come,
    but for the whole lines that match NOISE. A partial line is held back only while it may
    still become one of Ray's log lines (they start with "["), so progress bars redraw at once.
    Once `target` is closed (`icc ... 2>&1 | head`) the bytes are read and dropped, so the child
    never blocks on a full pipe."""
    pending = b""
    while chunk := os.read(source, 1 << 16):
        if target is None:
            continue
        *lines, pending = (pending + chunk).split(b"\n")
        try:
            for line in lines:
                if not NOISE.search(line):
                    target.write(line + b"\n")
            if pending and not pending.startswith(b"["):
                target.write(pending)
                pending = b""
            target.flush()
        except OSError:  # BrokenPipeError: nobody reads icc's stderr any more
            target = None
    if target is not None:
        with contextlib.suppress(OSError):
            target.write(pending)
            target.flush()


def _dies_with(parent: int):
    """What the child runs before `exec`: on Linux, ask for SIGKILL when `parent` dies, and exit at
    once if it has died already; elsewhere nothing (None)."""
    if not sys.platform.startswith("linux"):
        return None

    def die_with_parent() -> None:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return die_with_parent
