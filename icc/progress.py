"""Progress of a pipeline's stages on stderr: one line per stage, with rows, rows/s and time left.

In a terminal the line of a stage that counts rows is a live `tqdm` bar that stays when the stage
ends; piped (a log file, a cron job) it is a plain line at most every PIPED_INTERVAL_S seconds and
one when the stage ends (the only line of a stage that counts no rows), so that a run's output is
a few lines, not a redraw per batch:
`icc: embed 299 rows in 12.3 s, 24.3 rows/s` (with `, 6 s left of 299 rows` while a stage with a
known total runs), or `icc: cluster 0.8 s` for a stage that counts no rows.
"""

import os
import sys
import time

PIPED_INTERVAL_S = 60  # piped output: seconds between two lines of the same stage
# Set by `icc` for the pipeline it runs when its own stderr is a terminal: the pipeline's stderr is
# then a pipe through `icc` (icc.cli), which draws bars as the terminal would.
TTY_ENV = "ICC_STDERR_TTY"


class StageProgress:
    """The progress line of one stage: `update(rows)` as rows are done, `close()` when it ends.

    rows: whether the stage counts rows (a bar in a terminal from its start; a stage that does not
    gets one line when it ends); total: the rows it will do, if known (for the time left);
    enabled: False shows nothing.
    """

    def __init__(self, stage: str, total: int | None = None, enabled: bool = True, rows: bool = True, stream=None):
        from tqdm import tqdm

        self.stage, self.total, self.rows = stage, total, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.start = self.shown = time.monotonic()
        interactive = enabled and rows and (self.stream.isatty() or os.environ.get(TTY_ENV) == "1")
        self.bar = (tqdm(desc=f"icc: {stage}", total=total, unit="rows", file=self.stream, leave=True)
                    if interactive else None)

    def update(self, rows: int) -> None:
        self.rows += rows
        if self.bar is not None:
            self.bar.update(rows)
        elif self.enabled and time.monotonic() - self.shown >= PIPED_INTERVAL_S:
            self._line()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._line()

    def _line(self) -> None:
        self.shown = time.monotonic()
        print(f"icc: {self.stage} {describe(self.rows, self.shown - self.start, self.total)}", file=self.stream,
              flush=True)


def describe(rows: int, seconds: float, total: int | None = None) -> str:
    """`299 rows in 12.3 s, 24.3 rows/s` (and `, 6 s left` before `total` rows are done), or `0.8 s` without rows."""
    if not rows:
        return f"{seconds:.1f} s"
    rate = rows / max(seconds, 1e-9)
    text = f"{rows} rows in {seconds:.1f} s, {rate:.1f} rows/s"
    if total and rows < total:
        text += f", {(total - rows) / rate:.0f} s left of {total} rows"
    return text
