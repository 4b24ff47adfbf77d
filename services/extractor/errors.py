"""How an extraction run can end other than finished; each class's branch (etl_common.errors) says what comes next."""

from etl_common.errors import RunAborted, RunInterrupted, TransientError


class AlreadyRunning(TransientError):
    """Another extractor holds the run lock: it runs (or resumes) the run; this request is dropped."""


class Interrupted(RunInterrupted):
    """A stop was asked between pages; the checkpoint keeps the place."""


class SourceMisbehaved(RunAborted):
    """The source's answers cannot make a correct run (it repeats pages, or never ends): the run is failed for good."""


class RunFailed(RunInterrupted):
    """An unexpected error stopped the run: it is recorded as failed with the error; a resume retries the page."""
