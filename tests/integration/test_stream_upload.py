"""The upload streamed while a run loads, against a real OpenSSH SFTP server: equal files, or a clean fall-back."""

import os
import signal
import time
from pathlib import Path

import testbed as tb
from saver.settings import SaverSettings
from saver.stream import SUFFIX, StreamingUpload
from tests.unit.saver.test_loading_files import Loading, _complete, _page


def _settings(server, remote: Path, **env) -> SaverSettings:
    os.environ.update({**server.env(), "ETL_SFTP_REMOTE_DIR": str(remote), "ETL_SFTP_ATTEMPTS": "1"})
    try:
        return SaverSettings(**env)
    finally:
        for key in server.env():
            os.environ.pop(key, None)
        os.environ.pop("ETL_SFTP_ATTEMPTS", None)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (sshd's per-connection sessions)."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def _wait_for_session(pid: int) -> None:
    deadline = time.monotonic() + 30
    while not _children(pid):
        assert time.monotonic() < deadline, "the stream never opened its SFTP session"
        time.sleep(0.05)


def _store(tmp_path: Path, streaming: StreamingUpload) -> Loading:
    return Loading(str(tmp_path / "data.db"), str(tmp_path / "data"), streaming)


def test_a_run_streamed_as_its_pages_commit_lands_equal_to_the_local_files(tmp_path, sftp_server):
    remote = tmp_path / "remote"
    streaming = StreamingUpload(_settings(sftp_server, remote))
    store = _store(tmp_path, streaming)
    store.load_pages([_page("r1", 0), _page("r1", 1)])
    store.load_pages([_page("r1", 1)])  # a page delivered twice adds nothing
    store.load_pages([_page("r1", 2)])
    written = store.files.finish(store.conn, _complete(store, "r1", 3))
    sizes = {kind: info["bytes"] for kind, info in written.items()}
    paths = streaming.finish("r1", sizes, timeout_s=30)
    assert paths is not None and set(paths) == set(written)
    for kind, info in written.items():
        assert Path(paths[kind]) == remote / info["name"]
        assert Path(paths[kind]).read_bytes() == info["path"].read_bytes() != b""
    assert not list(remote.rglob(f"*{SUFFIX}"))


def test_sizes_that_differ_from_the_stream_give_it_up_and_leave_nothing(tmp_path, sftp_server):
    remote = tmp_path / "remote"
    streaming = StreamingUpload(_settings(sftp_server, remote))
    store = _store(tmp_path, streaming)
    store.load_pages([_page("r1", 0)])
    written = store.files.finish(store.conn, _complete(store, "r1", 1))
    sizes = {kind: info["bytes"] + 1 for kind, info in written.items()}
    assert streaming.finish("r1", sizes, timeout_s=30) is None
    assert not [f for f in remote.rglob("*") if f.is_file()]


def test_a_run_first_seen_mid_way_is_not_streamed(tmp_path, sftp_server):
    remote = tmp_path / "remote"
    Loading(str(tmp_path / "data.db"), str(tmp_path / "data")).load_pages([_page("r1", 0)])  # before a restart
    streaming = StreamingUpload(_settings(sftp_server, remote))
    store = _store(tmp_path, streaming)
    store.load_pages([_page("r1", 1)])
    written = store.files.finish(store.conn, _complete(store, "r1", 2))
    assert streaming.finish("r1", {k: v["bytes"] for k, v in written.items()}, timeout_s=30) is None
    assert not remote.exists() or not [f for f in remote.rglob("*") if f.is_file()]


def test_a_server_that_goes_away_during_the_load_gives_the_stream_up(tmp_path):
    server = tb.start_sftp(tmp_path / "sshd", tmp_path / "keys", tmp_path / "upload")
    remote = tmp_path / "remote"
    try:
        streaming = StreamingUpload(_settings(server, remote, sftp_timeout_s=2))
        store = _store(tmp_path, streaming)
        store.load_pages([_page("r1", 0)])
        _wait_for_session(server.proc.popen.pid)
        sessions = _children(server.proc.popen.pid)
        server.stop()
        for pid in sessions:  # an outage: the open session goes too, not only the listener
            os.kill(pid, signal.SIGKILL)
        store.load_pages([_page("r1", 1)])
        written = store.files.finish(store.conn, _complete(store, "r1", 2))
        assert streaming.finish("r1", {k: v["bytes"] for k, v in written.items()}, timeout_s=30) is None
        assert not [f for f in remote.rglob("*.jsonl") if f.is_file()]
    finally:
        server.stop()


def test_megabytes_in_three_files_at_once_stream_without_stalling(tmp_path, sftp_server):
    """Hundreds of pipelined writes per file, the three files interleaved: each file needs its own session."""
    remote = tmp_path / "remote"
    streaming = StreamingUpload(_settings(sftp_server, remote, sftp_timeout_s=5), max_queued_bytes=4 << 20)
    chunks = {kind: [os.urandom(40_000) for _ in range(200)] for kind in ("raw", "processed", "dlq")}
    sent = dict.fromkeys(chunks, 0)
    for i in range(200):
        for kind, pieces in chunks.items():
            streaming.send("r1", kind, f"d/{kind}.jsonl", sent[kind], pieces[i])
            sent[kind] += len(pieces[i])
    paths = streaming.finish("r1", sent, timeout_s=60)
    assert paths is not None
    for kind, pieces in chunks.items():
        assert Path(paths[kind]).read_bytes() == b"".join(pieces)
