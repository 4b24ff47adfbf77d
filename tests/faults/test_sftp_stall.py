"""An SFTP server that stops answering mid-upload ends the try within ETL_SFTP_TIMEOUT_S, and the upload succeeds once
it answers again."""

import subprocess

import pytest

import testbed as tb
from tests.faults.conftest import assert_exact, wait_for

IDS = list(range(1, 251))
TIMEOUT_S = 3


def _connections(port: int) -> list[str]:
    """Established TCP connections to the SFTP server's port (the saver's side and the server's)."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("after_bytes", "during"),
    [
        # Before the server's first answer: paramiko waits for the SFTP version without any timeout of its own.
        (0, "during opening the SFTP session"),
        # Mid-transfer: the raw file (~1.6 kB a user) is being written when the server stops taking bytes.
        (200_000, "during writing "),
    ],
    ids=["before-first-answer", "mid-write"],
)
def test_stalled_sftp_server_ends_the_try_then_the_upload_succeeds(
    make_source, make_pipeline, tmp_path, stopwatch, after_bytes, during
):
    sftp = tb.start_sftp(tmp_path / "sshd", tmp_path / "keys", tmp_path / "upload", stall=True)
    try:
        src = make_source(count=len(IDS))
        p = make_pipeline(
            src,
            upload_dir=sftp.upload_dir,
            ETL_SFTP_TIMEOUT_S=str(TIMEOUT_S),
            # Several attempts per try: a stall must still not be retried in place (the run shows it after one wait).
            ETL_SFTP_ATTEMPTS="3",
            ETL_UPLOAD_RETRY_S="2",
            ETL_UPLOAD_RETRY_MAX_S="4",
        )
        p.sftp_env.update(sftp.env())
        sftp.stall(after_bytes)
        stopwatch.fault()
        p.start_workers()
        assert p.extract().returncode == 0
        # The streamed upload and the whole upload each wait at most the timeout: generous bound for "ends at all".
        pending = p.wait_run(("upload_pending",), timeout_s=60)
        where = f"127.0.0.1:{sftp.port}"
        assert f"SFTP server {where} stopped answering for {TIMEOUT_S} s {during}" in pending["error"], pending["error"]
        assert "will be tried again" in pending["error"]
        assert "sftp upload failed, retrying" not in p.procs["saver"].output()
        assert sftp.stalled_sessions(), "the server never stalled"
        # Nothing under a final name: a stalled try leaves at most its temporary file.
        assert [f.name for f in sftp.upload_dir.rglob("*.jsonl")] == []
        # The saver closed its connections to the stalled sessions (only new tries' connections may be open).
        stalled = len(sftp.stalled_sessions())
        assert len(_connections(sftp.port)) <= 1, _connections(sftp.port)

        sftp.answer_again()
        run = p.wait_run(("succeeded",), timeout_s=60)
        stopwatch.recovered()
        assert run["error"] is None
        assert_exact(p, run, IDS)
        with p.db() as db:
            ledger = db.execute(
                "SELECT kind, name, bytes, remote_path, uploaded_at FROM uploaded_files WHERE run_id=? ORDER BY kind",
                (run["run_id"],),
            ).fetchall()
        assert [r["kind"] for r in ledger] == ["dlq", "processed", "raw"]
        for row in ledger:
            assert row["uploaded_at"] is not None
            assert (sftp.upload_dir / row["name"]).stat().st_size == row["bytes"]
            assert row["remote_path"] == str(sftp.upload_dir / row["name"])
        assert stalled >= 1
        wait_for(lambda: not _connections(sftp.port), timeout_s=TIMEOUT_S * 3, what="no connection left to the server")
    finally:
        sftp.answer_again()
        sftp.stop()
