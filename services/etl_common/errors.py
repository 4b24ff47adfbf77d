"""The error tree every service raises and handles: each branch says what its catcher does next.

    EtlError                   (abstract: raise a branch)
     ├── TransientError        defer: do not ack; retried later, or reclaimed by another consumer
     ├── PermanentError        dead-letter: ack the entry and dead-letter it with its reason
     ├── RunInterrupted        resume: stop the run; its checkpoint keeps the place for the next try
     └── RunAborted            fail: record the run as failed for good; the next run starts afresh

Anything else is a bug: it is logged with its traceback and counted. docs/errors.md draws the whole tree,
the services' own classes included.
"""

from enum import StrEnum


class NextStep(StrEnum):
    """What the code that catches an EtlError does next."""

    DEFER = "defer"
    DEAD_LETTER = "dead-letter"
    RESUME = "resume"
    FAIL = "fail"


class EtlError(Exception):
    """Base of every error the pipeline raises on purpose; raise one of its branches, which say what comes next."""

    next_step: NextStep | None = None


class TransientError(EtlError):
    """A failure that may heal by itself (network, a dependency down, a lock held): defer, retry later."""

    next_step = NextStep.DEFER


class PermanentError(EtlError):
    """An entry that retrying cannot fix (malformed, impossible record): ack it and dead-letter it with its reason."""

    next_step = NextStep.DEAD_LETTER


class RunInterrupted(EtlError):
    """A run that stops before its end with its checkpoint kept: the next try (or the lease's holder) resumes it."""

    next_step = NextStep.RESUME


class RunAborted(EtlError):
    """A run that cannot end correctly (its input cannot make a correct run): failed for good, its checkpoint goes."""

    next_step = NextStep.FAIL
