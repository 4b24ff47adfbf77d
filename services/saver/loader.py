"""Loading a batch of pages: one write composed of the store's rows, the appended run files and the upload stream."""

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import structlog

from etl_common import metrics, tracing
from etl_common.errors import PermanentError
from saver import schema
from saver.userrows import load_page

if TYPE_CHECKING:
    from saver.files import LoadingFiles
    from saver.store import Store
    from saver.stream import StreamingUpload

log = structlog.get_logger(__name__)


class Rows:
    """What a page's rows are written through inside the transaction: the store's SQL and the files appended."""

    def __init__(self, store: "Store", files: "LoadingFiles | None") -> None:
        self.conn = store.conn
        self._ensure_run = store._ensure_run
        self.loading = files  # saver.userrows appends each page's lines here, inside the transaction


@contextmanager
def atomic(
    store: "Store", files: "LoadingFiles | None" = None, stream: "StreamingUpload | None" = None
) -> Iterator[Rows]:
    """One write across the parts (sqlite-utils' ``Database.atomic()``): the rows in one SQLite transaction; the
    files' appends kept when it commits and cut back when it rolls back; then the committed bytes to the stream."""
    try:
        with store.transaction():
            yield Rows(store, files)
    except BaseException:
        if files is not None:
            files.committed(False)
        raise
    appended = files.committed(True) if files is not None else []
    if stream is None:
        return
    for run_id, kind, name, start, data in appended:
        try:
            stream.send(run_id, kind, name, start, data)
        except Exception:  # the stream is an optimisation: it must never stop the load
            log.exception("handing appended bytes on failed", run_id=run_id, kind=kind)


def load_pages(
    store: "Store",
    pages: Iterable[dict[str, Any]],
    files: "LoadingFiles | None" = None,
    stream: "StreamingUpload | None" = None,
) -> list[tuple[str, int]]:
    """Load pages in one write; a page already in the ledger adds nothing. Returns the new (run_id, page)."""
    loaded = []
    # In page order, so that the files appended while loading (LoadingFiles) keep the tables' order.
    ordered = sorted(pages, key=lambda p: (str(p["run_id"]), int(p["page"])))
    with atomic(store, files, stream) as rows:
        for page in ordered:
            # saver.userrows reads .conn, ._ensure_run and .loading: a Store's, with this write's files.
            if load_page(cast("Store", rows), page):
                loaded.append((str(page["run_id"]), int(page["page"])))
    return loaded


def report_loaded(
    store: "Store",
    pages: list[dict[str, Any]],
    traceparents: list[str | None],
    loaded: list[tuple[str, int]],
    t0: float,
) -> None:
    """One canonical log line and the metrics per page of a batch loaded since ``t0``; each run's progress."""
    elapsed = time.monotonic() - t0
    for p, tp in zip(pages, traceparents, strict=True):
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
            trace_id=tracing.trace_id_of(tp),
        )
    for run_id in {str(p["run_id"]) for p in pages}:
        run = store.run(run_id)
        if run is not None:
            metrics.RUN_PROGRESS.labels(stage="load").set(run["raw_count"])


def check_page(p: dict[str, Any]) -> None:
    """A processed page must have the shape the store expects; anything else is poison."""
    for key in ("run_id", "run_ts", "page", "raw", "valid", "invalid"):
        if key not in p:
            raise PermanentError(f"processed page lacks {key!r}")
    if not all(isinstance(p[k], list) for k in ("raw", "valid", "invalid")):
        raise PermanentError("processed page lists are not lists")


def keep_schemas(store: "Store", pages: list[dict[str, Any]]) -> None:
    """Keep the pages' observed schemas for their runs' drift; a failure costs the drift, never the pages (a lost
    PostgreSQL connection costs nothing: raised, so the pages are not acked)."""
    try:
        schema.save_pages(store.conn, pages)
    except (sqlite3.Error, KeyError, TypeError, ValueError) as exc:
        if store.connection_lost():
            raise  # not acked: the restarted saver gets the pages again and keeps their schemas then
        metrics.ERRORS.labels(stage="schema").inc()
        log.error("page schemas not kept; the run's drift will miss them", error=str(exc))
