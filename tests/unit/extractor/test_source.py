"""Retry-After parsing, retry waits and settings validation."""

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from pydantic import ValidationError

from extractor.settings import ExtractorSettings
from extractor.source import SourceUnavailable, _Wait, parse_retry_after


def test_retry_after_seconds_and_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 < parse_retry_after(when) <= 30


class _State:
    def __init__(self, attempt, exc):
        self.attempt_number = attempt
        self.outcome = type("O", (), {"exception": lambda self: exc})()


def test_wait_uses_configured_delays_with_retry_after_as_capped_floor():
    wait = _Wait([5, 15, 45], retry_after_max_s=60)
    assert wait(_State(1, SourceUnavailable("x"))) == 5
    assert wait(_State(3, SourceUnavailable("x"))) == 45
    assert wait(_State(1, SourceUnavailable("x", retry_after_s=20))) == 20
    assert wait(_State(1, SourceUnavailable("x", retry_after_s=3600))) == 60


def test_settings_parse_delays_and_reject_bad_cron():
    s = ExtractorSettings(retry_delays="0.1, 0.2", _env_file=None)
    assert s.retry_delays == [0.1, 0.2]
    with pytest.raises(ValidationError, match="cron"):
        ExtractorSettings(schedule="every day", _env_file=None)
    with pytest.raises(ValidationError):
        ExtractorSettings(retry_delays="1,-2", _env_file=None)
