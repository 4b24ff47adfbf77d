"""The saver loop: follow run events, load processed pages (saver.loader), finish complete runs (saver.finisher)."""

import sqlite3
import time
from typing import Any

import redis
import structlog
from opentelemetry import trace

from etl_common import metrics, runs, streams, tracing
from etl_common.errors import PermanentError
from etl_common.keys import GROUP_SAVER
from etl_common.ops import Heartbeat
from etl_common.runs import EventType, RunStatus
from etl_common.runtime import Stopper, serve_loop
from etl_common.worker import StreamWorker
from saver import lineage, loader, report, storage, success
from saver.files import LoadingFiles
from saver.finisher import Deferred, Failed, Finisher, Outcome, Succeeded
from saver.retention import Retention
from saver.settings import SaverSettings
from saver.store import Store
from saver.stream import StreamingUpload
from saver.watchdog import Watchdog

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("saver")

Page = tuple[streams.Entry, dict[str, Any], str | None]  # the entry, its decoded page, its traceparent

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
# Events after which the run's lineage event may be due (START, FAIL).
_LINEAGE_EVENTS = (EventType.RUN_STARTED, EventType.EXTRACT_FAILED, EventType.RUN_FAILED)


class Worker(StreamWorker[SaverSettings]):
    """Consumes the processed-pages and events streams as the 'saver' group; the only database writer."""

    def __init__(
        self, settings: SaverSettings, client: redis.Redis, store: Store, heartbeat: Heartbeat, stopper: Stopper
    ) -> None:
        super().__init__(
            settings, client, heartbeat, stopper, GROUP_SAVER, lambda keys: [keys.processed_stream, keys.events_stream]
        )
        self.store = store
        # Plain files are appended as the pages commit (the end of a run renames them); encrypted ones are written
        # at the end (no plaintext copy may touch the disk).
        # On PostgreSQL several savers load one run's pages, each into its own folder: the run's finisher writes
        # its files from the tables.
        appending = not settings.encryption_enabled and store.engine == "sqlite"
        self.files = LoadingFiles(settings.data_dir) if appending else None
        # The upload streamed as pages commit, when the files are appended while loading and SFTP is on.
        self.stream = StreamingUpload(settings) if settings.sftp_enabled and self.files else None
        self.reports = report.Reports(store, store.database, heartbeat.beat)
        self.finisher = Finisher(settings, store, self.files, self.stream, self.reports)
        self.retention = Retention(settings, store.conn, client, heartbeat.beat)  # applied after each success
        # A full volume: the entries read but not settled are kept (not acked, not read again, so their delivery
        # count does not grow) and handled again when the next try is due.
        self.storage = storage.StorageFull(
            settings.db_path if store.engine == "sqlite" else "",
            settings.data_dir,
            settings.storage_retry_s,
            settings.storage_retry_max_s,
            heartbeat,
            settings.storage_reserve_bytes,
        )
        self.held: list[streams.Entry] = []
        self.settled: set[str] = set()  # ids of this turn's entries acked or dead-lettered
        self.watchdog = Watchdog(settings, client, self.keys, store)
        self.lineage = lineage.Lineage(settings)  # OpenLineage events, when configured

    def serve(self) -> None:
        """Create the groups, restore the last success metric, finish what a restart left, then loop until SIGTERM."""
        self.reader.setup()
        self.storage.reserve.hold()
        log.info("saver ready", db=self.store.database.redacted(), consumer=self.reader.consumer)
        success.restore(self.store)
        for run_id in self.store.runs_owing_upload():
            self.finisher.due[run_id] = (0.0, 0)
        try:
            self.finish_runs()
        except Exception as exc:
            if not storage.is_full(exc):
                raise
            self._storage_full(exc)  # the loop tries again when due
        latest = self.store.latest_run_without_quality()
        if latest is not None:  # its report was under way when the saver stopped
            self.reports.start(latest)
        try:
            serve_loop(self.turn, self.reader.setup, self.heartbeat, self.stopper)
        finally:
            self.reports.kill_all()
        log.info("saver stopped")

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
                    self.finisher.release(run_id)
        except Exception as exc:
            if not storage.is_full(exc):
                raise
            self.held = [e for e in entries if e.id not in self.settled]
            self._storage_full(exc)
            return
        self.held = []

    def _storage_full(self, exc: BaseException) -> None:
        """Wait for space: shown on /readyz, the metric, the log and (when the write fits) every run in flight."""
        self.storage.hit(exc)
        self.storage.show(self.store.note_in_flight)

    def _handle(self, entries: list[streams.Entry], retrying: bool) -> None:
        pages: list[Page] = []
        for entry in entries:
            if self.reader.too_many_deliveries(entry):
                self._dead(entry, f"delivered {entry.deliveries} times without success")
                continue
            try:
                payload, tp = streams.decode(entry.fields)
                if entry.stream == self.keys.processed_stream:
                    loader.check_page(payload)
                    pages.append((entry, payload, tp))
                else:
                    self._event(payload, tp)
                    self._ack([entry], delete=False)
            except PermanentError as exc:
                self._dead(entry, str(exc))
            except (KeyError, TypeError, ValueError) as exc:
                self._dead(entry, f"malformed entry: {type(exc).__name__}: {exc}")
        if pages:
            self._load(pages)
        # On PostgreSQL every turn, idle ones too: a run another saver held while finishing, then dropped (killed
        # mid-finish, its lock gone with its connection), is taken over though no entry comes any more.
        if entries or retrying or self.store.engine == "postgresql":
            self.finish_runs()
        for run_id, rewrite in self.finisher.due_now():
            if rewrite:
                self._finish(run_id)
            elif self.store.claim(run_id):
                try:
                    with self.finisher.span(run_id, "save.retry_upload"):
                        self._settle(run_id, self.finisher.retry_upload(run_id))
                finally:
                    self.store.unclaim(run_id)
            else:
                self.finisher.due.pop(run_id, None)
        self.reports.collect()

    def _event(self, payload: dict[str, Any], tp: str | None) -> None:
        """Record an event about a run on its header; its lineage and trace follow."""
        self.store.apply_event(payload)
        self.retention.on_event(payload)
        event = runs.parse_event(payload)
        if event is not None and event.type in _LINEAGE_EVENTS:
            self.lineage.emit(self.store.conn, event.run_id)
        if event is not None and event.type == EventType.RUN_STARTED and tp:
            self.finisher.run_traces[event.run_id] = tp

    def _ack(self, entries: list[streams.Entry], delete: bool = True) -> None:
        self.reader.ack(entries, delete=delete)
        self.settled.update(e.id for e in entries)

    def _dead(self, entry: streams.Entry, reason: str) -> None:
        """Dead-letter the entry; a processed page lost so fails its run (it can never complete), with the reason."""
        # The events stream has other readers: only the processed stream is deleted on ack.
        owned = entry.stream == self.keys.processed_stream
        self.reader.dead_letter(entry, reason, delete=owned)
        self.settled.add(entry.id)
        run_id = streams.run_id_of(entry.fields)
        if owned and run_id:
            self._settle(run_id, Failed(f"save: a processed page was dead-lettered: {reason}"))

    def _load(self, pages: list[Page]) -> None:
        t0 = time.monotonic()
        # The report's child imports pandas and reads the run while it loads, not after its last page.
        self.reports.prepare(str(pages[0][1]["run_id"]))
        with tracer.start_as_current_span(
            "load.pages", context=tracing.context_from(pages[0][2]), attributes={"etl.pages": len(pages)}
        ):
            try:
                with tracer.start_as_current_span("sqlite.transaction"):
                    loaded = loader.load_pages(self.store, (p for _, p, _ in pages), self.files, self.stream)
            except _UNLOADABLE as exc:
                # One bad page must not block the batch: load them one by one, dead-letter the culprit.
                log.warning("batch failed; loading its pages one by one", error=str(exc))
                pages, loaded = self._load_one_by_one(pages)
        loader.keep_schemas(self.store, [p for _, p, _ in pages])
        # Acked only after the commit: a crash before it redelivers, the ledger skips repeats.
        self._ack([e for e, _, _ in pages])
        for _, p, page_tp in pages:
            if page_tp:  # the run's trace, for save.finish when run_started was read before a restart
                self.finisher.run_traces.setdefault(str(p["run_id"]), page_tp)
        loader.report_loaded(self.store, [p for _, p, _ in pages], [tp for _, _, tp in pages], loaded, t0)

    def _load_one_by_one(self, pages: list[Page]) -> tuple[list[Page], list[tuple[str, int]]]:
        kept: list[Page] = []
        loaded: list[tuple[str, int]] = []
        for entry, payload, tp in pages:
            try:
                loaded += loader.load_pages(self.store, [payload], self.files, self.stream)
                kept.append((entry, payload, tp))
            except _UNLOADABLE as exc:
                self._dead(entry, f"page cannot be loaded: {type(exc).__name__}: {exc}")
        return kept, loaded

    def finish_runs(self) -> None:
        """Finish every run whose pages are all loaded, and act on how each ended; on PostgreSQL, also retry the
        runs another saver left waiting for their upload (it may have died: its retry would never come)."""
        for run_id in self.store.complete_runs():
            self._finish(run_id)
        if self.store.engine == "postgresql":
            self.finisher.adopt(self.store.runs_owing_upload())

    def _finish(self, run_id: str) -> None:
        if not self.store.claim(run_id):
            self.finisher.due.pop(run_id, None)  # another saver finishes it (or has)
            return
        try:
            with self.finisher.span(run_id, "save.finish"):
                outcome = self.finisher.finish(run_id)
                if outcome is not None:
                    self._settle(run_id, outcome)
        finally:
            self.store.unclaim(run_id)

    def _settle(self, run_id: str, outcome: Outcome) -> None:
        """Record how a run ended, once: its status, its events and metrics."""
        if isinstance(outcome, Succeeded):
            self.reports.wait(run_id)
            self.store.mark_uploaded(run_id, outcome.remote)
            success.announce(self.client, self.keys, self.store, run_id)
            self.finisher.run_traces.pop(run_id, None)
            self.lineage.emit(self.store.conn, run_id)
            self.retention.after_success()
        elif isinstance(outcome, Deferred):
            self.store.mark(run_id, RunStatus.UPLOAD_PENDING, outcome.reason)
            metrics.RUNS.labels(stage="save", outcome="upload_pending").inc()
            retry_in = round(max(0.0, outcome.until - time.monotonic()), 3)
            log.error("upload failed; run is upload_pending", run_id=run_id, error=outcome.reason, retry_in_s=retry_in)
        else:
            self.store.fail(run_id, outcome.reason)
            self.finisher.release(run_id)
            self.lineage.emit(self.store.conn, run_id)
