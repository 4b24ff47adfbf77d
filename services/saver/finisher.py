"""Finishing a loaded run: its checks, files and upload as one step that says how it ended (an ``Outcome``)."""

import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from opentelemetry import trace

from etl_common import metrics, tracing
from etl_common.retry import Backoff
from etl_common.runs import RunStatus
from saver import crypto, report, schema, sftp, storage
from saver.agefmt import x25519
from saver.files import LoadingFiles, RunFile, write_run_files
from saver.settings import SaverSettings
from saver.store import Store
from saver.stream import StreamingUpload

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("saver")


@dataclass(frozen=True)
class Succeeded:
    """Files written and uploaded: kind -> remote path ({} when SFTP is off)."""

    remote: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Deferred:
    """The run waits (``upload_pending``) with ``reason`` shown, until the monotonic time ``until``."""

    reason: str
    until: float


@dataclass(frozen=True)
class Failed:
    """The run can never complete as it is (``failed``), for ``reason``."""

    reason: str


Outcome = Succeeded | Deferred | Failed


class Finisher:
    """Finishes loaded runs and retries deferred ones; the store does the SQL, this the files and the upload."""

    def __init__(
        self,
        settings: SaverSettings,
        store: Store,
        files: LoadingFiles | None,
        stream: StreamingUpload | None,
        reports: report.Reports,
    ) -> None:
        self.settings, self.store, self.files, self.stream, self.reports = settings, store, files, stream, reports
        self.backoff = Backoff(settings.upload_retry_s, settings.upload_retry_max_s)
        self.due: dict[str, tuple[float, int]] = {}  # run_id -> (monotonic time of its next try, failures so far)
        self.streamed: set[str] = set()  # runs whose files are those appended (and streamed) while they loaded
        self.run_traces: dict[str, str] = {}  # run_id -> the traceparent of its start

    def span(self, run_id: str, name: str) -> AbstractContextManager[trace.Span]:
        """The span of finishing the run, in the run's trace: the outcome is acted on inside it too."""
        ctx = tracing.context_from(self.run_traces.get(run_id))
        return tracer.start_as_current_span(name, context=ctx, attributes={"etl.run_id": run_id})

    def finish(self, run_id: str) -> Outcome | None:
        """Check, write and upload the run's files; None for a run the store does not know."""
        run = self.store.run(run_id)
        if run is None:
            return None
        # The report first: its child reads the last rows while this process checks, merges and writes.
        self.reports.start(run_id)
        self._check_invariants(run_id)
        self._record_schema(run_id)
        t0 = time.monotonic()
        with tracer.start_as_current_span("files.write"):
            try:
                written = self._files(run, self._recipients())
            except crypto.CryptoError as exc:
                # A bad recipients file must not stop the saver: the run waits, like for an SFTP outage.
                return self.defer(run_id, str(exc))
            except Exception as exc:
                if storage.is_full(exc):
                    raise  # the whole saver waits for space (Worker.turn), the run stays loaded
                return self._unexpected(run_id, "files", "writing the files", exc)
        for kind, info in written.items():
            self.store.record_file(run_id, kind, info)
        metrics.STAGE_DURATION.labels(stage="files").observe(time.monotonic() - t0)
        log.info("files written", run_id=run_id, **{k: v["records"] for k, v in written.items()})
        return self._upload(run_id, {k: (v["path"], v["name"]) for k, v in written.items()})

    def due_now(self) -> list[tuple[str, bool]]:
        """The deferred runs whose wait is over, each with whether its files must be written again (not whole, or
        written before encryption was switched on or off: never sent as they are)."""
        due: list[tuple[str, bool]] = []
        for run_id, (until, _) in list(self.due.items()):
            if time.monotonic() < until:
                continue
            run = self.store.run(run_id)
            if run is None or run["status"] != RunStatus.UPLOAD_PENDING:
                self.due.pop(run_id, None)
                continue
            rows = self.store.files(run_id)
            mode_changed = any(bool(f["encrypted"]) != self.settings.encryption_enabled for f in rows)
            whole = len(rows) == 3 and all(self._local(f["name"]).exists() for f in rows)
            due.append((run_id, mode_changed or not whole))
        return due

    def adopt(self, run_ids: list[str]) -> None:
        """Runs waiting for an upload retry that this saver does not know of (another saver put them off): due
        after the first wait, as if this saver had failed them once. While that saver lives, both retry, one at a
        time (the run's finishing lock), each at its own pace."""
        for run_id in run_ids:
            if run_id not in self.due:
                self.due[run_id] = (time.monotonic() + self.backoff.delay(1), 0)

    def retry_upload(self, run_id: str) -> Outcome:
        """Upload the run's files as they were written."""
        return self._upload(run_id, {f["kind"]: (self._local(f["name"]), f["name"]) for f in self.store.files(run_id)})

    def _local(self, name: str) -> Path:
        return Path(self.settings.data_dir) / name

    def defer(self, run_id: str, reason: str) -> Deferred:
        """The one place a run is put off: its next try is due after ``ETL_UPLOAD_RETRY_S`` doubled at each failure,
        up to ``ETL_UPLOAD_RETRY_MAX_S``."""
        failures = self.due.get(run_id, (0.0, 0))[1] + 1
        until = time.monotonic() + self.backoff.delay(failures)
        self.due[run_id] = (until, failures)
        return Deferred(reason, until)

    def release(self, run_id: str) -> None:
        """A failed run keeps nothing half-made: its appended files and its streamed remote files are removed.

        Safe if the run is resumed later: its next appends find no file and its files are written from the tables.
        """
        run = self.store.run(run_id)
        if run is not None:
            (self.files or LoadingFiles(self.settings.data_dir)).discard(run)
        if self.stream:
            self.stream.discard(run_id)

    def _unexpected(self, run_id: str, stage: str, doing: str, exc: Exception) -> Deferred:
        """A bug or a library error nobody foresaw must not stop the saver: logged with its traceback, counted
        under ``stage``, and the run waits with the reason."""
        log.exception(f"unexpected error {doing}", run_id=run_id)
        metrics.ERRORS.labels(stage=stage).inc()
        return self.defer(run_id, f"unexpected error {doing}: {type(exc).__name__}: {exc}"[:2000])

    def _upload(self, run_id: str, files: dict[str, tuple[Path, str]]) -> Outcome:
        if not self.settings.sftp_enabled:
            self.due.pop(run_id, None)
            return Succeeded({})
        t0 = time.monotonic()
        try:
            with tracer.start_as_current_span("sftp.upload", attributes={"etl.files": len(files)}):
                remote = self._streamed(run_id, files) or sftp.upload(self.settings, files)
        except sftp.UploadFailed as exc:
            return self.defer(run_id, str(exc))
        except Exception as exc:
            return self._unexpected(run_id, "upload", "during the upload", exc)
        metrics.STAGE_DURATION.labels(stage="upload").observe(time.monotonic() - t0)
        self.due.pop(run_id, None)
        return Succeeded(remote)

    def _streamed(self, run_id: str, files: dict[str, tuple[Path, str]]) -> dict[str, str] | None:
        """The remote paths when the run's files went up as its pages committed; None: upload them whole."""
        if self.stream is None or run_id not in self.streamed:
            return None
        self.streamed.discard(run_id)  # one chance: a retry uploads the files whole
        sizes = {kind: path.stat().st_size for kind, (path, _) in files.items()}
        return self.stream.finish(run_id, sizes, self.settings.sftp_timeout_s)

    def _files(self, run: sqlite3.Row, recipients: list[x25519.Recipient] | None) -> dict[str, RunFile]:
        """The run's three files: those appended while it loaded when they are whole, else written from the tables."""
        written = self.files.finish(self.store.conn, run) if self.files and not recipients else None
        if written is None:
            # What was appended is not used; plaintext must not linger (e.g. appended before encryption was on).
            self.release(run["run_id"])
            written = write_run_files(self.store.conn, run, self.settings.data_dir, recipients)
        else:
            self.streamed.add(run["run_id"])
        return written

    def _recipients(self) -> list[x25519.Recipient] | None:
        """age recipients when encryption is on (the recipients file is re-read, so a rotation needs no restart)."""
        if not self.settings.encryption_enabled:
            return None
        recipients = crypto.load_recipients(
            self.settings.encryption_recipients, self.settings.encryption_recipients_file
        )
        if not recipients:
            raise crypto.CryptoError("encryption is on but the configured recipients list is empty")
        return recipients

    def _check_invariants(self, run_id: str) -> None:
        """The store-side checks of a loaded run (whatever the cause upstream): each violation is a warning once."""
        found = self.store.invariant_violations(run_id)
        added = set(self.store.add_warnings(run_id, [w for _, w in found])) if found else set()
        for check, warning in found:
            if warning in added:
                metrics.RUN_INVARIANT_VIOLATIONS.labels(check=check).inc()
                log.warning("run invariant violated", run_id=run_id, check=check, warning=warning)

    def _record_schema(self, run_id: str) -> None:
        """Merge the loaded run's schema and record its drift (warnings, metric); never holds the run back."""
        try:
            changes = schema.finish(self.store.conn, run_id, self.settings.drift_null_rate_jump)
        except (sqlite3.Error, KeyError, TypeError, ValueError) as exc:
            metrics.ERRORS.labels(stage="schema").inc()
            log.error("run schema not recorded; the run goes on without its drift", run_id=run_id, error=str(exc))
            return
        for change in changes or []:
            metrics.SCHEMA_DRIFT.labels(change=change["change"]).inc()
        if changes:
            log.warning("schema drift", run_id=run_id, changes=[f"{c['change']}:{c['field']}" for c in changes])
