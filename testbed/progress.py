"""Progress of a long run on the console: a bar (tqdm) on a terminal, a plain line every few seconds otherwise."""

import shutil
import time
from typing import IO, Any

from tqdm import tqdm


class Progress:
    """Users loaded of the run's total: a bar (tqdm) on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, stream: IO[str], every_s: float = 5.0) -> None:
        self.stream, self.every_s = stream, every_s
        self.bar: Any = None
        self.note = ""
        self.last_line = time.monotonic()  # the first line after every_s: short runs print none
        self.t0 = time.monotonic()

    def update(self, loaded: int, total: int, pages: int, note: str = "") -> None:
        """Show ``loaded`` users of ``total`` (unknown: -1) in ``pages`` pages, with the rate and the time left.

        ``note``: what holds the run back (e.g. the source being retried, and why), shown instead of a time left.
        """
        if self.stream.isatty():
            if self.bar is None:
                # A terminal that reports no size (0x0, e.g. under `script`) would hide the bar: assume 80x24 then.
                size = shutil.get_terminal_size()
                self.bar = tqdm(
                    total=max(total, 1),
                    unit="users",
                    desc="loading",
                    file=self.stream,
                    ncols=size.columns,
                    nrows=size.lines,
                )
            self.bar.total = max(total, loaded, 1)
            # While the source is retried the bar says so, and why on a line above it (once per new cause).
            if note and note != self.note:
                self.bar.write(note, file=self.stream)
            self.note = note
            self.bar.set_description("retrying" if note else "loading", refresh=False)
            self.bar.set_postfix(pages=pages, refresh=False)
            self.bar.update(loaded - self.bar.n)  # through update() so tqdm's rate and time left follow
            self.bar.refresh()
        elif time.monotonic() - self.last_line >= self.every_s:
            self.last_line = time.monotonic()
            rate = loaded / max(time.monotonic() - self.t0, 1e-3)
            left = f", about {(total - loaded) / rate:.0f}s left" if rate > 0 and total > loaded else ""
            left = f"; {note}" if note else left
            of = f"/{total:,}" if total > 0 else ""
            print(f"loaded {loaded:,}{of} users in {pages} page(s), {rate:,.0f} users/s{left}", file=self.stream)
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
