"""Each blocking SFTP call bounded: a server silent for ``ETL_SFTP_TIMEOUT_S`` during one gets its connection closed."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import paramiko


class Watchdog:
    """Closes ``client`` when the operation under way has waited ``timeout_s`` on the server without progress.

    The channel's own timeout (set here too) makes a read or a wait for the send window raise ``TimeoutError``,
    but paramiko leaves two waits unbounded: starting the SFTP subsystem (``Channel.invoke_subsystem`` and the
    version exchange) and a transport write stuck on a full TCP buffer. Closing the transport ends every such wait
    with an error, so no operation outlives the timeout by more than a moment.
    """

    def __init__(self, client: paramiko.SSHClient, timeout_s: float, where: str) -> None:
        self.client, self.timeout_s, self.where = client, timeout_s, where
        self.stalled = ""  # the operation the server stopped answering during; "" while it answers
        self._doing = ""
        self._since = 0.0
        self._closed = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._watch, name="sftp-watchdog", daemon=True)
        self._thread.start()

    @contextmanager
    def doing(self, what: str) -> Iterator[None]:
        """Bound the SFTP calls inside to ``timeout_s`` without progress; ``what`` names them in the error."""
        with self._cv:
            self._doing, self._since = what, time.monotonic()
            self._cv.notify()
        try:
            yield
        except TimeoutError:  # the channel's timeout ran out before the watchdog's
            self.stalled = self.stalled or what
            raise
        finally:
            with self._cv:
                self._doing = ""

    def progress(self, *_: object) -> None:
        """The server took more bytes (``put``'s callback): the operation's wait starts again."""
        self._since = time.monotonic()

    def bound(self, sftp: paramiko.SFTPClient) -> paramiko.SFTPClient:
        """``sftp`` with its channel's reads and send-window waits bounded too (``socket.timeout``)."""
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(self.timeout_s)
        return sftp

    def message(self) -> str:
        """The stall as the run shows it: the cause and what happens next."""
        return (
            f"SFTP server {self.where} stopped answering for {self.timeout_s:g} s during {self.stalled}; "
            "the connection was closed and the upload will be tried again (check the server; for a slow one "
            "raise ETL_SFTP_TIMEOUT_S)"
        )

    def close(self) -> None:
        """Stop watching and close the connection (once the watchdog thread has ended: no thread, no socket left)."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        self.client.close()

    def _watch(self) -> None:
        with self._cv:
            while not self._closed:
                if not self._doing:
                    self._cv.wait()
                    continue
                left = self._since + self.timeout_s - time.monotonic()
                if left > 0:
                    self._cv.wait(left)
                    continue
                self.stalled = self._doing
                break
        if self.stalled:
            self.client.close()  # every wait on this connection now ends with an error
