"""make bench's engine knobs: BENCH_DATABASE and BENCH_SAVERS are taken, or refused with one line naming the fix."""

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", SCRIPTS / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("engine", "savers", "chosen"),
    [(None, None, ("sqlite", 1)), ("postgresql", "2", ("postgresql", 2)), (" PostgreSQL ", "1", ("postgresql", 1))],
)
def test_takes_the_engine_and_the_savers(bench, monkeypatch, engine, savers, chosen):
    for name, value in (("BENCH_DATABASE", engine), ("BENCH_SAVERS", savers)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert bench._database() == chosen


@pytest.mark.parametrize(
    ("engine", "savers", "words"),
    [
        ("sqlite", "2", "BENCH_SAVERS=2 needs BENCH_DATABASE=postgresql"),
        ("mysql", "1", "use sqlite (the default) or postgresql"),
        ("postgresql", "0", "at least one saver"),
    ],
)
def test_refuses_what_the_product_refuses_in_one_line(bench, monkeypatch, engine, savers, words):
    monkeypatch.setenv("BENCH_DATABASE", engine)
    monkeypatch.setenv("BENCH_SAVERS", savers)
    refusal = bench._database()
    assert isinstance(refusal, str) and words in refusal and "\n" not in refusal
