"""How an extraction run can end other than finished; each class's branch (etl_common.errors) says what comes next."""

from etl_common.errors import RunAborted, RunInterrupted, TransientError


class AlreadyRunning(TransientError):
    """Another extractor holds the run lock: it runs (or resumes) the run; this request is dropped."""


class RunEndedMeanwhile(AlreadyRunning):
    """The extractor that held the lock ran its run to an end while this one waited: no second run; request met."""


class Interrupted(RunInterrupted):
    """A stop was asked between pages; the checkpoint keeps the place."""


class CheckpointUnreadable(RunAborted):
    """The run checkpoint is not one this version wrote: its run is failed for good and the checkpoint deleted."""

    def __init__(self, key: str, problem: str, run_id: str = "") -> None:
        self.key, self.problem, self.run_id = key, problem, run_id
        super().__init__(
            f"the run checkpoint {key} cannot be read ({problem}): the run in it"
            + (f" ({run_id})" if run_id else "")
            + " cannot be resumed, so it is failed for good and the checkpoint deleted; the next run starts afresh."
            " If the extractor cannot delete it, delete it by hand: redis-cli DEL " + key
        )


class SourceMisbehaved(RunAborted):
    """The source's answers cannot make a correct run (it repeats pages, or never ends): the run is failed for good."""


class RunFailed(RunInterrupted):
    """An unexpected error stopped the run: it is recorded as failed with the error; a resume retries the page."""
