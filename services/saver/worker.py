"""The saver loop: load processed pages, follow run events, finish complete runs (files, upload, phase 3)."""

import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import redis
import structlog
from opentelemetry import trace
from tenacity import RetryCallState, wait_exponential

from etl_common import metrics, streams, tracing
from etl_common.errors import PermanentError
from etl_common.keys import CHANNEL_PHASE3, GROUP_SAVER
from etl_common.ops import Heartbeat
from etl_common.runtime import Stopper, serve_loop
from etl_common.worker import StreamWorker
from saver import crypto, lineage, report, schema, sftp, storage
from saver.agefmt import x25519
from saver.files import LoadingFiles, RunFile, write_run_files
from saver.retention import Retention
from saver.settings import SaverSettings
from saver.store import Store
from saver.stream import StreamingUpload
from saver.watchdog import Watchdog

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("saver")


# What a page the database refuses, or a page of the wrong shape, raises: the page is poison, not the database.
_UNLOADABLE = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
)


class Worker(StreamWorker[SaverSettings]):
    """Consumes the processed-pages and events streams as the 'saver' group; the only database writer."""

    def __init__(
        self, settings: SaverSettings, client: redis.Redis, store: Store, heartbeat: Heartbeat, stopper: Stopper
    ) -> None:
        super().__init__(
            settings, client, heartbeat, stopper, GROUP_SAVER, lambda keys: [keys.processed_stream, keys.events_stream]
        )
        self.store = store
        # run_id -> (monotonic time of the next upload try, failed tries so far)
        self.upload_due: dict[str, tuple[float, int]] = {}
        # The same tenacity strategy as every other retry, spread over turns instead of slept in one.
        self.upload_wait = wait_exponential(multiplier=settings.upload_retry_s, max=settings.upload_retry_max_s)
        self.run_traces: dict[str, str] = {}
        self.retention = Retention(settings, store.conn, client, heartbeat.beat)  # applied after each success
        # The upload streamed as pages commit, when the files are appended while loading (plaintext) and SFTP is on.
        self.streaming = StreamingUpload(settings) if settings.sftp_enabled and store.loading else None
        if self.streaming and store.loading:
            store.loading.on_commit = self.streaming.send
        self.streamed: set[str] = set()  # runs whose files are those appended (and streamed) while they loaded
        self.reports: dict[str, report.Job] = {}  # run_id -> its quality report being computed
        # A full volume: the entries read but not settled are kept (not acked, not read again, so their delivery
        # count does not grow) and handled again when the next try is due.
        self.storage = storage.StorageFull(
            settings.db_path, settings.data_dir, settings.storage_retry_s, settings.storage_retry_max_s, heartbeat
        )
        self.held: list[streams.Entry] = []
        self.settled: set[str] = set()  # ids of this turn's entries acked or dead-lettered
        self.watchdog = Watchdog(settings, client, self.keys, store)
        self.lineage = lineage.Lineage(settings)  # OpenLineage events, when configured

    def serve(self) -> None:
        """Create the groups, restore the last success metric, finish what a restart left, then loop until SIGTERM."""
        self.reader.setup()
        log.info("saver ready", db=self.settings.db_path, consumer=self.reader.consumer)
        self._restore_last_run()
        for run_id in self.store.runs_owing_upload():
            self.upload_due[run_id] = (0.0, 0)
        try:
            self.finish_runs()
        except Exception as exc:
            if not storage.is_full(exc):
                raise
            self._storage_full(exc)  # the loop tries again when due
        latest = self.store.latest_run_without_quality()
        if latest is not None:  # its report was under way when the saver stopped
            self._start_report(latest)
        try:
            serve_loop(self.turn, self.reader.setup, self.heartbeat, self.stopper)
        finally:
            for job in self.reports.values():
                job.kill()  # it only reads; the next start computes the report again
        log.info("saver stopped")

    def _restore_last_run(self) -> None:
        """The last success survives a restart, so 'no successful run in 26 h' does not fire on one."""
        row = self.store.conn.execute(
            "SELECT started_at, finished_at FROM etl_runs WHERE status='succeeded' AND finished_at IS NOT NULL "
            "ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()
        if row and row[0]:
            finished, started = _parse_iso(row[1]), _parse_iso(row[0])
            metrics.LAST_SUCCESS.set(finished.timestamp())
            metrics.LAST_RUN_DURATION.set((finished - started).total_seconds())
        ratio = self.store.latest_invalid_ratio()
        if ratio is not None:
            metrics.LAST_RUN_INVALID_RATIO.set(ratio)

    def turn(self) -> None:
        """Handle up to ``batch_pages`` entries (events applied, pages loaded at once); finish runs; retry uploads.

        While the volume is full, nothing is read: the held entries are handled again when the next try is due.
        """
        retrying = self.storage.full
        if retrying and self.storage.seconds_to_retry() > 0:
            self.stopper.sleep(min(1.0, self.storage.seconds_to_retry()))
            return
        entries = self.held or self.reader.read(self.settings.batch_pages)
        self.settled.clear()
        try:
            self._handle(entries, retrying)
            if retrying:
                self.store.clear_in_flight(storage.ERROR_PREFIX)
                self.storage.cleared()
            # Only once caught up with the streams: what waited for the saver is loaded before runs are judged.
            if not entries and self.watchdog.due():
                for run_id in self.watchdog.check():
                    self._release(run_id)
        except Exception as exc:
            if not storage.is_full(exc):
                raise
            self.held = [e for e in entries if e.id not in self.settled]
            self._storage_full(exc)
            return
        self.held = []

    def _storage_full(self, exc: BaseException) -> None:
        """Wait for space: shown on /readyz, the metric, the log and (when the write fits) every run in flight."""
        reason = self.storage.hit(exc)
        try:
            self.store.note_in_flight(reason[:2000])
        except sqlite3.Error:
            pass  # no room even for that: /readyz, the log and etl_saver_storage_full say it

    def _handle(self, entries: list[streams.Entry], retrying: bool) -> None:
        pages: list[tuple[streams.Entry, dict[str, Any], str | None]] = []
        for entry in entries:
            if self.reader.too_many_deliveries(entry):
                self._dead(entry, f"delivered {entry.deliveries} times without success")
                continue
            try:
                payload, tp = streams.decode(entry.fields)
                if entry.stream == self.keys.processed_stream:
                    _check_page(payload)
                    pages.append((entry, payload, tp))
                else:
                    self.store.apply_event(payload)
                    self.retention.on_event(payload)
                    if payload.get("type") in ("run_started", "extract_failed", "run_failed"):
                        self.lineage.emit(self.store.conn, str(payload["run_id"]))
                    if payload.get("type") == "run_started" and tp:
                        self.run_traces[str(payload["run_id"])] = tp
                    self._ack([entry], delete=False)
            except PermanentError as exc:
                self._dead(entry, str(exc))
            except (KeyError, TypeError, ValueError) as exc:
                self._dead(entry, f"malformed entry: {type(exc).__name__}: {exc}")
        if pages:
            self._load(pages)
        if entries or retrying:
            self.finish_runs()
        self._retry_uploads()
        self._collect_reports()

    def _ack(self, entries: list[streams.Entry], delete: bool = True) -> None:
        self.reader.ack(entries, delete=delete)
        self.settled.update(e.id for e in entries)

    def _dead(self, entry: streams.Entry, reason: str) -> None:
        """Dead-letter the entry; a processed page lost so fails its run (it can never complete), with the reason."""
        self.reader.dead_letter(entry, reason, delete=self._owned(entry))
        self.settled.add(entry.id)
        run_id = streams.run_id_of(entry.fields)
        if entry.stream == self.keys.processed_stream and run_id:
            self.store.fail(run_id, f"save: a processed page was dead-lettered: {reason}")
            self._release(run_id)
            self.lineage.emit(self.store.conn, run_id)

    def _release(self, run_id: str) -> None:
        """A failed run keeps nothing half-made: its appended files and its streamed remote files are removed.

        Safe if the run is resumed later: its next appends find no file and its files are written from the tables.
        """
        run = self.store.run(run_id)
        if run is not None:
            (self.store.loading or LoadingFiles(self.settings.data_dir)).discard(run)
        if self.streaming:
            self.streaming.discard(run_id)

    def _owned(self, entry: streams.Entry) -> bool:
        # The events stream has other readers: only the processed stream is deleted on ack.
        return entry.stream == self.keys.processed_stream

    def _load(self, pages: list[tuple[streams.Entry, dict[str, Any], str | None]]) -> None:
        t0 = time.monotonic()
        tp = pages[0][2]
        with tracer.start_as_current_span(
            "load.pages", context=tracing.context_from(tp), attributes={"etl.pages": len(pages)}
        ):
            try:
                with tracer.start_as_current_span("sqlite.transaction"):
                    loaded = self.store.load_pages(p for _, p, _ in pages)
            except _UNLOADABLE as exc:
                # One bad page must not block the batch: load them one by one, dead-letter the culprit.
                log.warning("batch failed; loading its pages one by one", error=str(exc))
                pages, loaded = self._load_one_by_one(pages)
        self._keep_schemas([p for _, p, _ in pages])
        # Acked only after the commit: a crash before it redelivers, the ledger skips repeats.
        self._ack([e for e, _, _ in pages])
        elapsed = time.monotonic() - t0
        for _, p, page_tp in pages:
            if page_tp:  # the run's trace, for save.finish when run_started was read before a restart
                self.run_traces.setdefault(str(p["run_id"]), page_tp)
            fresh = (str(p["run_id"]), int(p["page"])) in loaded
            metrics.PAGES.labels(stage="load", outcome="loaded" if fresh else "duplicate").inc()
            if fresh:
                metrics.RECORDS.labels(stage="load", outcome="loaded").inc(len(p["valid"]))
                metrics.RECORDS.labels(stage="load", outcome="invalid").inc(len(p["invalid"]))
            metrics.PAGE_DURATION.labels(stage="load").observe(elapsed / len(pages))
            log.info(
                "page loaded" if fresh else "page already loaded",
                run_id=p["run_id"],
                page=p["page"],
                valid=len(p["valid"]),
                invalid=len(p["invalid"]),
                outcome="loaded" if fresh else "duplicate",
                duration_ms=round(elapsed * 1000 / len(pages), 2),
                trace_id=tracing.trace_id_of(page_tp),
            )
        for run_id in {str(p["run_id"]) for _, p, _ in pages}:
            run = self.store.run(run_id)
            if run is not None:
                metrics.RUN_PROGRESS.labels(stage="load").set(run["raw_count"])

    def _load_one_by_one(
        self, pages: list[tuple[streams.Entry, dict[str, Any], str | None]]
    ) -> tuple[list[tuple[streams.Entry, dict[str, Any], str | None]], list[tuple[str, int]]]:
        kept: list[tuple[streams.Entry, dict[str, Any], str | None]] = []
        loaded: list[tuple[str, int]] = []
        for entry, payload, tp in pages:
            try:
                loaded += self.store.load_pages([payload])
                kept.append((entry, payload, tp))
            except _UNLOADABLE as exc:
                self._dead(entry, f"page cannot be loaded: {type(exc).__name__}: {exc}")
        return kept, loaded

    def finish_runs(self) -> None:
        """Write files and upload for every run whose pages are all loaded."""
        for run_id in self.store.complete_runs():
            self._write_and_upload(run_id)

    def _write_and_upload(self, run_id: str) -> None:
        run = self.store.run(run_id)
        if run is None:
            return
        ctx = tracing.context_from(self.run_traces.get(run_id))
        with tracer.start_as_current_span("save.finish", context=ctx, attributes={"etl.run_id": run_id}):
            self._check_invariants(run_id)
            self._record_schema(run_id)
            self._start_report(run_id)
            t0 = time.monotonic()
            with tracer.start_as_current_span("files.write"):
                try:
                    written = self._files(run, self._recipients())
                except crypto.CryptoError as exc:
                    # A bad recipients file must not stop the saver: the run waits, like for an SFTP outage.
                    self._defer(run_id, str(exc))
                    return
                except Exception as exc:
                    if storage.is_full(exc):
                        raise  # the whole saver waits for space (Worker.turn), the run stays loaded
                    # A bug: the run waits with the reason and the files are written again later.
                    self._defer_unexpected(run_id, "files", "writing the files", exc)
                    return
            for kind, info in written.items():
                self.store.record_file(run_id, kind, info)
            metrics.STAGE_DURATION.labels(stage="files").observe(time.monotonic() - t0)
            log.info("files written", run_id=run_id, **{k: v["records"] for k, v in written.items()})
            self._upload(run_id, {k: (v["path"], v["name"]) for k, v in written.items()})

    def _check_invariants(self, run_id: str) -> None:
        """The store-side checks of a loaded run (whatever the cause upstream): each violation is a warning once."""
        found = self.store.invariant_violations(run_id)
        added = set(self.store.add_warnings(run_id, [w for _, w in found])) if found else set()
        for check, warning in found:
            if warning in added:
                metrics.RUN_INVARIANT_VIOLATIONS.labels(check=check).inc()
                log.warning("run invariant violated", run_id=run_id, check=check, warning=warning)

    def _files(self, run: sqlite3.Row, recipients: list[x25519.Recipient] | None) -> dict[str, RunFile]:
        """The run's three files: those appended while it loaded when they are whole, else written from the tables."""
        loading = self.store.loading
        written = loading.finish(self.store.conn, run) if loading and not recipients else None
        if written is None:
            # What was appended is not used; plaintext must not linger (e.g. appended before encryption was on).
            (loading or LoadingFiles(self.settings.data_dir)).discard(run)
            if self.streaming:
                self.streaming.discard(run["run_id"])
            written = write_run_files(self.store.conn, run, self.settings.data_dir, recipients)
        else:
            self.streamed.add(run["run_id"])
        return written

    def _keep_schemas(self, pages: list[dict[str, Any]]) -> None:
        """Keep the pages' observed schemas for their runs' drift; a failure costs the drift, never the pages."""
        try:
            schema.save_pages(self.store.conn, pages)
        except (sqlite3.Error, KeyError, TypeError, ValueError) as exc:
            metrics.ERRORS.labels(stage="schema").inc()
            log.error("page schemas not kept; the run's drift will miss them", error=str(exc))

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

    def _start_report(self, run_id: str) -> None:
        """Start computing the run's data-quality report in a child process, unless it exists or is under way."""
        if run_id in self.reports or self.store.has_quality(run_id):
            return
        try:
            self.reports[run_id] = report.Job(self.settings.db_path, run_id)
        except OSError as exc:
            metrics.ERRORS.labels(stage="quality").inc()
            log.error("quality report not started; the run goes on without one", run_id=run_id, error=str(exc))

    def _collect_reports(self) -> None:
        """Store the reports whose child has ended."""
        for run_id, job in list(self.reports.items()):
            if job.done():
                self._store_report(run_id)

    def _await_report(self, run_id: str) -> None:
        """Wait for the run's report before the run is marked succeeded, so a succeeded run has one.

        The child started when the run was loaded and ran beside its files and upload; what is left
        is usually its start-up (importing pandas, about a second).
        """
        job = self.reports.get(run_id)
        if job is None:
            return
        while not job.done():
            self.heartbeat.beat()
            time.sleep(0.02)
        self._store_report(run_id)

    def _store_report(self, run_id: str) -> None:
        """Store the ended child's report; a failed one is logged and never holds the run back."""
        job = self.reports.pop(run_id)
        seconds = time.monotonic() - job.started
        try:
            result = job.result()
            rate = float(result["invalid_rate"])
            self.store.save_quality(run_id, result)
        except (report.ReportFailed, sqlite3.Error, KeyError, TypeError, ValueError) as exc:
            metrics.ERRORS.labels(stage="quality").inc()
            log.error("quality report failed; the run goes on without one", run_id=run_id, error=str(exc))
            return
        metrics.STAGE_DURATION.labels(stage="quality").observe(seconds)
        metrics.LAST_RUN_INVALID_RATIO.set(rate)
        log.info(
            "quality report stored",
            run_id=run_id,
            records=result["records"],
            invalid=result["invalid"],
            invalid_rate=rate,
            rules=result["rules"],
            duration_ms=round(seconds * 1000, 1),
        )

    def _defer_unexpected(self, run_id: str, stage: str, doing: str, exc: Exception) -> None:
        """A bug or a library error nobody foresaw must not stop the saver: logged with its traceback, counted
        under ``stage``, and the run waits (``upload_pending``) with the reason."""
        log.exception(f"unexpected error {doing}", run_id=run_id)
        metrics.ERRORS.labels(stage=stage).inc()
        self._defer(run_id, f"unexpected error {doing}: {type(exc).__name__}: {exc}"[:2000])

    def _upload(self, run_id: str, files: dict[str, tuple[Path, str]]) -> None:
        if not self.settings.sftp_enabled:
            self._await_report(run_id)
            self.store.mark_uploaded(run_id, {})
            self._succeeded(run_id, {})
            return
        t0 = time.monotonic()
        try:
            with tracer.start_as_current_span("sftp.upload", attributes={"etl.files": len(files)}):
                remote = self._streamed(run_id, files) or sftp.upload(self.settings, files)
        except sftp.UploadFailed as exc:
            self._defer(run_id, str(exc))
            return
        except Exception as exc:
            self._defer_unexpected(run_id, "upload", "during the upload", exc)
            return
        metrics.STAGE_DURATION.labels(stage="upload").observe(time.monotonic() - t0)
        self.upload_due.pop(run_id, None)
        self._await_report(run_id)
        self.store.mark_uploaded(run_id, remote)
        self._succeeded(run_id, remote)

    def _streamed(self, run_id: str, files: dict[str, tuple[Path, str]]) -> dict[str, str] | None:
        """The remote paths when the run's files went up as its pages committed; None: upload them whole."""
        if self.streaming is None or run_id not in self.streamed:
            return None
        self.streamed.discard(run_id)  # one chance: a retry uploads the files whole
        sizes = {kind: path.stat().st_size for kind, (path, _) in files.items()}
        return self.streaming.finish(run_id, sizes, self.settings.sftp_timeout_s)

    def _defer(self, run_id: str, error: str) -> None:
        """The run stays upload_pending with ``error`` shown; the next try is due after a doubling delay.

        The delay is ``ETL_UPLOAD_RETRY_S`` doubled at each failure up to ``ETL_UPLOAD_RETRY_MAX_S``
        (tenacity's ``wait_exponential``); the saver keeps serving meanwhile.
        """
        _, failures = self.upload_due.get(run_id, (0.0, 0))
        failures += 1
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = failures
        delay = self.upload_wait(state)
        self.upload_due[run_id] = (time.monotonic() + delay, failures)
        self.store.mark(run_id, "upload_pending", error)
        metrics.RUNS.labels(stage="save", outcome="upload_pending").inc()
        log.error("upload failed; run is upload_pending", run_id=run_id, error=error, retry_in_s=delay)

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

    def _retry_uploads(self) -> None:
        now = time.monotonic()
        for run_id, (due, _) in list(self.upload_due.items()):
            if now >= due:
                run = self.store.run(run_id)
                if run is None or run["status"] != "upload_pending":
                    self.upload_due.pop(run_id, None)
                    continue
                rows = self.store.files(run_id)
                files = {f["kind"]: (self._local(f["name"]), f["name"]) for f in rows}
                # Files written before encryption was switched on (or off) are rewritten, never sent as they are.
                mode_changed = any(bool(f["encrypted"]) != self.settings.encryption_enabled for f in rows)
                if len(files) < 3 or mode_changed or not all(p.exists() for p, _ in files.values()):
                    self._write_and_upload(run_id)
                else:
                    with tracer.start_as_current_span(
                        "save.retry_upload",
                        context=tracing.context_from(self.run_traces.get(run_id)),
                        attributes={"etl.run_id": run_id},
                    ):
                        self._upload(run_id, files)

    def _local(self, name: str) -> Path:
        return Path(self.settings.data_dir) / name

    def _succeeded(self, run_id: str, remote: dict[str, str]) -> None:
        run = self.store.run(run_id)
        files = [f["name"] for f in self.store.files(run_id)]
        payload = {"run_id": run_id, "status": "succeeded", "files": files}
        pipe = self.client.pipeline(transaction=True)
        pipe.publish(CHANNEL_PHASE3, orjson.dumps(payload))
        pipe.xadd(
            self.keys.events_stream,
            streams.encode({"type": "phase3_complete", **payload}, tracing.current_traceparent()),
            maxlen=100_000,
            approximate=True,
        )
        pipe.execute()
        self.run_traces.pop(run_id, None)
        self.lineage.emit(self.store.conn, run_id)
        metrics.RUNS.labels(stage="save", outcome="succeeded").inc()
        metrics.RECORDS.labels(stage="upload", outcome="uploaded").inc(run["valid_count"] if run else 0)
        metrics.LAST_SUCCESS.set(time.time())
        if run is not None and run["started_at"] and run["finished_at"]:
            seconds = (_parse_iso(run["finished_at"]) - _parse_iso(run["started_at"])).total_seconds()
            metrics.LAST_RUN_DURATION.set(seconds)
            metrics.STAGE_DURATION.labels(stage="run").observe(seconds)
        log.info(
            "run succeeded",
            run_id=run_id,
            valid=run["valid_count"] if run else None,
            invalid=run["invalid_count"] if run else None,
            files=files,
        )
        self.retention.after_success()


def _parse_iso(value: str) -> datetime:
    """ISO 8601 with ``Z`` or an offset (fromisoformat of Python 3.10 does not take ``Z``)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _check_page(p: dict[str, Any]) -> None:
    """A processed page must have the shape the store expects; anything else is poison."""
    for key in ("run_id", "run_ts", "page", "raw", "valid", "invalid"):
        if key not in p:
            raise PermanentError(f"processed page lacks {key!r}")
    if not all(isinstance(p[k], list) for k in ("raw", "valid", "invalid")):
        raise PermanentError("processed page lists are not lists")
