"""The demo's progress display: a tqdm bar on a terminal, plain lines otherwise; a source retried says so."""

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


CAUSE = "retrying the source (try 2 after a 1.0s wait): ConnectError: [Errno 111] Connection refused"


def test_plain_lines_say_retrying_and_why_instead_of_a_time_left():
    out = io.StringIO()
    progress = Progress(out, every_s=0)
    progress.update(50, 208, 1, CAUSE)
    progress.update(100, 208, 2)
    first, second = out.getvalue().splitlines()
    assert first.endswith(f"; {CAUSE}") and "left" not in first
    assert "retrying" not in second and "left" in second


def test_the_bar_says_retrying_and_prints_each_cause_once():
    out = Terminal()
    progress = Progress(out)
    for _ in range(3):
        progress.update(0, 208, 0, CAUSE)
    progress.update(100, 208, 1)
    progress.close()
    text = out.getvalue()
    assert text.count(CAUSE) == 1
    assert "retrying:" in text and text.rstrip().rsplit("\r", 1)[-1].startswith("loading:")
