"""The upload streamed while a run loads: each committed page's file bytes go to the SFTP server at once."""

import posixpath
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import paramiko
import structlog

from etl_common import metrics, retry
from saver import sftp, sftpwatch
from saver.settings import SaverSettings

log = structlog.get_logger(__name__)

# Suffix of the remote temporary files written as pages commit (see sftp.STREAM_PART).
SUFFIX = sftp.STREAM_PART


class _Run:
    """One run's stream: its own SSH connection and, per kind, an SFTP session with the open remote file.

    One session per file: paramiko matches the answers to pipelined writes per session, and two files writing
    pipelined through one session take each other's answers (the writer then waits forever).
    """

    def __init__(self, client: paramiko.SSHClient, settings: SaverSettings) -> None:
        self.client = client
        # Bounds every call on the server: a stalled one gives the stream up instead of holding this thread.
        self.watch = sftpwatch.Watchdog(client, settings.sftp_timeout_s, f"{settings.sftp_host}:{settings.sftp_port}")
        # kind -> (session, remote file, target path, bytes sent)
        self.files: dict[str, tuple[paramiko.SFTPClient, paramiko.SFTPFile, str, int]] = {}

    def close(self) -> None:
        self.watch.close()


class StreamingUpload:
    """Sends the bytes ``LoadingFiles`` appends, as their transactions commit, to ``<target>.stream.part`` files.

    A background thread does the SFTP work. The stream is an optimisation only: any error (server down, a run
    first seen mid-way after a restart, no room in ``max_queued_bytes`` for the SFTP timeout) gives the run up,
    and ``finish`` returns None: the caller uploads the whole files, as without a stream.
    """

    def __init__(self, settings: SaverSettings, max_queued_bytes: int = 16 << 20) -> None:
        self.settings, self.max_queued_bytes = settings, max_queued_bytes
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._room = threading.Condition()  # signalled as queued bytes are sent
        self._queued = 0  # bytes handed over and not yet sent (guarded by _room)
        self._given_up: set[str] = set()  # runs not streamed any more (worker's side)
        self._cancelled: set[str] = set()  # runs whose finish the worker stopped waiting for
        self._runs: dict[str, _Run | None] = {}  # the thread's side; None: given up
        self._thread = threading.Thread(target=self._serve, name="sftp-stream", daemon=True)
        self._thread.start()

    def send(self, run_id: str, kind: str, name: str, start: int, data: bytes) -> None:
        """Hand over ``data``, the bytes of ``name`` from offset ``start`` just committed.

        Waits (at most the SFTP timeout) while more than ``max_queued_bytes`` are waiting for the server, so memory
        stays bounded and a slow server slows the load down instead of being given up on.
        """
        if run_id in self._given_up:
            return
        deadline = time.monotonic() + self.settings.sftp_timeout_s
        with self._room:
            # In slices, so that SIGTERM (retry.STOP) ends the wait at once, like every other wait of the services.
            while not (room := self._queued + len(data) <= self.max_queued_bytes or self._queued == 0):
                if retry.STOP.is_set() or time.monotonic() >= deadline:
                    break
                self._room.wait(0.1)
            if room:
                self._queued += len(data)
        if not room:
            self._given_up.add(run_id)
            self._queue.put(("give_up", run_id, f"the server took no data for {self.settings.sftp_timeout_s} s"))
            return
        self._queue.put(("data", run_id, kind, name, start, data))

    def discard(self, run_id: str) -> None:
        """The run's files are not those streamed (written from the tables): give its stream up."""
        self._given_up.discard(run_id)
        self._queue.put(("give_up", run_id, "finished"))

    def finish(self, run_id: str, sizes: dict[str, int], timeout_s: float) -> dict[str, str] | None:
        """Close and rename the run's streamed files when each holds ``sizes[kind]`` bytes; kind -> remote path.

        None when the run was not streamed whole (the caller uploads the files); waits at most ``timeout_s`` for
        the bytes still queued.
        """
        if run_id in self._given_up:
            self._given_up.discard(run_id)
            self._queue.put(("give_up", run_id, "finished"))
            return None
        result: Future[dict[str, str] | None] = Future()
        self._queue.put(("finish", run_id, sizes, result))
        deadline = time.monotonic() + timeout_s
        while not retry.STOP.is_set() and time.monotonic() < deadline:
            try:
                return result.result(timeout=0.1)
            except FutureTimeout:
                continue
        with self._lock:
            if result.done():
                return result.result()
            self._cancelled.add(run_id)  # the thread will not rename now
        log.warning("streamed upload did not finish in time; uploading the files whole", run_id=run_id)
        return None

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            op, run_id = item[0], item[1]
            try:
                if op == "data":
                    self._data(run_id, *item[2:])
                elif op == "finish":
                    self._finish(run_id, item[2], item[3])
                else:
                    self._give_up(run_id, item[2])
            except Exception as exc:  # the thread must survive anything; the run falls back to a whole upload
                if op == "finish" and not item[3].done():
                    item[3].set_result(None)
                self._give_up(run_id, f"{type(exc).__name__}: {exc}")

    def _data(self, run_id: str, kind: str, name: str, start: int, data: bytes) -> None:
        with self._room:
            self._queued -= len(data)
            self._room.notify_all()
        if run_id not in self._runs:
            if start != 0:  # first seen mid-way (the saver restarted during the run): not streamed
                self._runs[run_id] = None
                return
            self._runs[run_id] = _Run(sftp.connect(self.settings), self.settings)
        run = self._runs[run_id]
        if run is None:
            return
        if kind not in run.files:
            target = posixpath.join(self.settings.sftp_remote_dir, name)
            with run.watch.doing(f"opening {target}{SUFFIX}"):
                session = run.watch.bound(run.client.open_sftp())
                sftp.mkdirs(session, posixpath.dirname(target))
                remote = session.open(target + SUFFIX, "wb")
            remote.set_pipelined(True)
            run.files[kind] = (session, remote, target, 0)
        session, remote, target, sent = run.files[kind]
        if start != sent:
            raise ValueError(f"{name}: bytes from offset {start} after {sent} sent")
        with run.watch.doing(f"writing {target}{SUFFIX}"):
            remote.write(data)
        run.files[kind] = (session, remote, target, sent + len(data))

    def _finish(self, run_id: str, sizes: dict[str, int], result: Future[dict[str, str] | None]) -> None:
        """Sets ``result`` to the remote paths, or None; under the lock, so a worker that stopped waiting knows."""
        run = self._runs.pop(run_id, None)
        if run is None:
            with self._lock:
                self._cancelled.discard(run_id)
                result.set_result(None)
            return
        try:
            if set(run.files) != set(sizes) or any(run.files[k][3] != n for k, n in sizes.items()):
                raise ValueError("the streamed files are not those written")
            for _, remote, target, _ in run.files.values():
                with run.watch.doing(f"closing {target}{SUFFIX}"):
                    remote.close()  # waits for the server's acknowledgement of every pipelined write
            out = {}
            with self._lock:
                if run_id in self._cancelled:
                    raise ValueError("the worker stopped waiting")
                for kind, (session, _, target, sent) in run.files.items():
                    with run.watch.doing(f"renaming {target}{SUFFIX} to {target}"):
                        if session.stat(target + SUFFIX).st_size != sent:
                            raise ValueError(f"size of {target}{SUFFIX} on the server differs from the local file")
                        sftp.replace(session, target + SUFFIX, target)
                    metrics.SFTP_BYTES.inc(sent)
                    out[kind] = target
                metrics.SFTP_UPLOADS.labels(outcome="succeeded").inc()
                result.set_result(out)
        except (OSError, EOFError, paramiko.SSHException, sftp.UploadFailed, ValueError) as exc:
            error = run.watch.message() if run.watch.stalled else str(exc)
            log.warning("streamed upload given up; uploading the files whole", run_id=run_id, error=error)
            self._remove(run)
            with self._lock:
                self._cancelled.discard(run_id)
                if not result.done():
                    result.set_result(None)
        finally:
            run.close()

    def _give_up(self, run_id: str, reason: str) -> None:
        run = self._runs.get(run_id)
        self._runs[run_id] = None
        if reason == "finished":
            self._runs.pop(run_id, None)
        if run is not None:
            error = run.watch.message() if run.watch.stalled else reason
            log.warning("streamed upload given up; the files will be uploaded whole", run_id=run_id, error=error)
            self._remove(run)
            run.close()

    @staticmethod
    def _remove(run: _Run) -> None:
        """Best effort: a temporary file left behind on a dead connection is harmless (never renamed)."""
        if run.watch.stalled:
            return  # the connection is closed
        for session, _, target, _ in run.files.values():
            with run.watch.doing(f"removing {target}{SUFFIX}"):
                sftp.remove_quietly(session, target + SUFFIX)
