"""The services' one retry mechanism: redis-py's command retries through tenacity, cut short by a stop."""

import time

import pytest
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from etl_common import retry


class Flaky:
    """A command that fails ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"down ({self.calls})")
        return "PONG"


def run(policy: Retry, failures: int) -> tuple[object, int, list[int]]:
    told: list[int] = []
    command = Flaky(failures)
    try:
        result: object = policy.call_with_retry(command, lambda _e, n: told.append(n), with_failure_count=True)
    except ConnectionError as exc:
        result = exc
    return (result if isinstance(result, str) else type(result)), command.calls, told


@pytest.mark.parametrize("failures", [0, 1, 3, 4, 9])
def test_same_tries_and_failure_reports_as_redis_py(failures):
    ours = retry.StoppableRetry(ConstantBackoff(0), retries=3, supported_errors=(ConnectionError,))
    theirs = Retry(ConstantBackoff(0), retries=3, supported_errors=(ConnectionError,))
    assert run(ours, failures) == run(theirs, failures)


def test_a_stop_ends_the_retries_at_once():
    policy = retry.StoppableRetry(ConstantBackoff(600), retries=5, supported_errors=(ConnectionError,))
    retry.STOP.set()
    try:
        t0 = time.monotonic()
        with pytest.raises(retry.Stopped):
            policy.call_with_retry(Flaky(10), lambda _e: None)
        assert time.monotonic() - t0 < 60  # not the 600 s backoff
    finally:
        retry.STOP.clear()


def test_a_stop_is_not_an_exception_that_handlers_swallow():
    assert not issubclass(retry.Stopped, Exception)
