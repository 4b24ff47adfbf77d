"""Encrypted upload on real parts: age files on the OpenSSH server, decrypted by the documented command."""

import hashlib
import shutil
import sqlite3
import subprocess

import pytest

from etl_common import streams
from saver.files import write_run_files
from tests.integration._security import (
    age_keygen,
    parse_lines,
    saver_cli,
    sftp_env,
    start_locked_sftp,
    table_lines,
)

KINDS = (("raw", "raw_file"), ("processed", "processed_file"), ("dlq", "dlq_file"))


@pytest.fixture(scope="module")
def locked_sftp(tmp_path_factory):
    server, passphrase = start_locked_sftp(tmp_path_factory.mktemp("sftp-locked"))
    yield server, passphrase
    server.stop()


@pytest.fixture
def encrypted_run(tmp_path, make_source, make_pipeline, locked_sftp):
    server, passphrase = locked_sftp
    identity = tmp_path / "identity.txt"
    public = age_keygen(identity)
    source = make_source(count=120, bad_every=7)
    p = make_pipeline(
        source,
        **sftp_env(server, ETL_SFTP_KEY_PASSPHRASE=passphrase),
        ETL_ENCRYPTION_ENABLED="true",
        ETL_ENCRYPTION_RECIPIENTS=public,
    )
    p.start_workers()
    done = p.extract()
    assert done.returncode == 0, done.stdout + done.stderr
    return p, p.wait_run(("succeeded",)), identity


def test_uploaded_files_are_age_and_decrypt_to_exactly_the_plaintext(tmp_path, encrypted_run):
    p, run, identity = encrypted_run
    run_id = run["run_id"]
    with p.db() as db:
        files = {f["kind"]: f for f in db.execute("SELECT * FROM uploaded_files WHERE run_id=?", (run_id,))}
    # The same run written without encryption, by the saver's own writer, from the same tables.
    plain_dir = tmp_path / "plain"
    conn = p.db()
    conn.row_factory = sqlite3.Row
    plain = write_run_files(conn, run, plain_dir)
    conn.close()
    for kind, key in KINDS:
        f = files[kind]
        assert f["name"] == run[key] + ".age" and f["encrypted"] == 1 and f["uploaded_at"]
        remote = p.upload_dir / f["name"]
        data = remote.read_bytes()
        assert data.startswith(b"age-encryption.org/v1\n")
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f["bytes"], f["sha256"])
        out = tmp_path / f"{kind}.jsonl"
        done = saver_cli("decrypt", "--identity", str(identity), str(remote), str(out))
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == plain[kind]["path"].read_bytes()
        assert parse_lines(out.read_bytes()) == table_lines(p, run_id, kind)
        assert f["records"] == len(table_lines(p, run_id, kind)) > 0
    assert run["invalid_count"] > 0


def test_no_plaintext_copy_is_left_in_the_data_dir_or_on_the_server(encrypted_run):
    p, run, _ = encrypted_run
    local = sorted(x.relative_to(p.data_dir).as_posix() for x in p.data_dir.rglob("*") if x.is_file())
    assert local == sorted(run[key] + ".age" for _, key in KINDS)
    remote = sorted(x.relative_to(p.upload_dir).as_posix() for x in p.upload_dir.rglob("*") if x.is_file())
    assert remote == local


def test_phase3_announces_the_age_names(encrypted_run):
    p, run, _ = encrypted_run
    events = [streams.decode(fields)[0] for _, fields in p.redis.xrange(p.keys.events_stream)]
    phase3 = [e for e in events if e.get("type") == "phase3_complete" and e["run_id"] == run["run_id"]]
    assert phase3 and sorted(phase3[-1]["files"]) == sorted(run[key] + ".age" for _, key in KINDS)


def test_one_changed_byte_makes_decryption_fail_loudly(tmp_path, encrypted_run):
    p, run, identity = encrypted_run
    remote = p.upload_dir / (run["processed_file"] + ".age")
    data = bytearray(remote.read_bytes())
    data[len(data) // 2] ^= 0x20
    tampered = tmp_path / "tampered.age"
    tampered.write_bytes(bytes(data))
    out = tmp_path / "out.jsonl"
    done = saver_cli("decrypt", "--identity", str(identity), str(tampered), str(out))
    assert done.returncode != 0
    assert "authentication failed" in done.stderr
    assert not out.exists() and not (tmp_path / "out.jsonl.part").exists()
    stranger = tmp_path / "stranger.txt"
    age_keygen(stranger)
    done = saver_cli("decrypt", "--identity", str(stranger), str(remote), str(out))
    assert done.returncode != 0 and "not encrypted to this identity" in done.stderr and not out.exists()


@pytest.mark.skipif(shutil.which("age") is None, reason="the age command-line tool is not installed")
def test_files_are_standard_age_that_the_age_tool_decrypts(tmp_path, encrypted_run):
    """Recipients need not run this project: the reference age tool reads the files."""
    p, run, identity = encrypted_run
    remote = p.upload_dir / (run["processed_file"] + ".age")
    done = subprocess.run(["age", "--decrypt", "--identity", str(identity), str(remote)], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert parse_lines(done.stdout) == table_lines(p, run["run_id"], "processed")


def test_files_written_before_encryption_was_switched_on_are_never_uploaded(tmp_path, make_source, make_pipeline):
    """A run left upload_pending with plaintext files is rewritten encrypted once the saver restarts with encryption."""
    identity = tmp_path / "identity.txt"
    public = age_keygen(identity)
    p = make_pipeline(make_source(count=40), ETL_SFTP_KNOWN_HOSTS=str(tmp_path / "missing_known_hosts"))
    known_hosts = p.sftp_env["ETL_SFTP_KNOWN_HOSTS"]
    p.start_workers()
    assert p.extract().returncode == 0
    pending = p.wait_run(("upload_pending",))
    assert "known_hosts" in pending["error"]
    assert len(list(p.data_dir.rglob("*.jsonl"))) == 3
    p.procs["saver"].stop()
    p.start(
        "saver",
        tag="saver-encrypting",
        ETL_SFTP_KNOWN_HOSTS=known_hosts,
        ETL_ENCRYPTION_ENABLED="true",
        ETL_ENCRYPTION_RECIPIENTS=public,
    )
    run = p.wait_run(("succeeded",), run_id=pending["run_id"])
    for folder in (p.data_dir, p.upload_dir):
        names = sorted(x.name for x in folder.rglob("*") if x.is_file())
        assert names and all(n.endswith(".jsonl.age") for n in names), names
    with p.db() as db:
        flags = {r[0] for r in db.execute("SELECT encrypted FROM uploaded_files WHERE run_id=?", (run["run_id"],))}
    assert flags == {1}
    out = tmp_path / "processed.jsonl"
    done = saver_cli("decrypt", "-i", str(identity), str(p.upload_dir / (run["processed_file"] + ".age")), str(out))
    assert done.returncode == 0 and parse_lines(out.read_bytes()) == table_lines(p, run["run_id"], "processed")
