"""The demo's progress display: a tqdm bar on a terminal, plain lines otherwise."""

import io

from testbed.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    progress = Progress(out, every_s=0)
    progress.update(50, 200, 5)
    progress.close()
    line = out.getvalue().strip()
    assert line.startswith("loaded 50/200 users in 5 page(s), ")
    assert "users/s" in line and "s left" in line
    assert "\r" not in out.getvalue()


def test_a_bar_on_a_terminal():
    out = Terminal()
    progress = Progress(out)
    progress.update(50, 200, 5)
    progress.update(120, 200, 12)
    progress.close()
    assert "\r" in out.getvalue()
    assert "120/200" in out.getvalue() and "users" in out.getvalue() and "pages=12" in out.getvalue()
