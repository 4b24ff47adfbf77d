"""SFTP trust on real OpenSSH: passphrases, refused keys, unknown or changed host keys fail loudly, then recover."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration._security import sftp_env, start_locked_sftp


@pytest.fixture(scope="module")
def locked_sftp(tmp_path_factory):
    """Our own sshd (never the shared one): its authorized_keys also gets an RSA key with the same passphrase."""
    server, passphrase = start_locked_sftp(tmp_path_factory.mktemp("sftp-trust"))
    rsa = server.keys_dir / "id_rsa"
    _keygen(rsa, "rsa", passphrase)
    with (server.dir / "authorized_keys").open("a") as fh:
        fh.write(rsa.with_suffix(".pub").read_text())
    yield server, passphrase
    server.stop()


def _keygen(path: Path, kind: str, passphrase: str) -> Path:
    args = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "test", "-f", str(path)]
    subprocess.run(args + (["-b", "3072"] if kind == "rsa" else []), check=True)
    return path


def _replace(path: Path, data: bytes) -> None:
    """Swap a file's content atomically, as a secret mount or an operator's `mv` does."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _start(make_source, make_pipeline, server, **env):
    p = make_pipeline(make_source(count=30), **sftp_env(server, **env))
    p.start_workers()
    done = p.extract()
    assert done.returncode == 0, done.stdout + done.stderr
    return p


def _assert_pending(p, *fragments: str, secrets: tuple[str, ...] = ()):
    run = p.wait_run(("upload_pending",), timeout_s=60)
    for fragment in fragments:
        assert fragment in (run["error"] or ""), run["error"]
    for secret in secrets:
        assert secret not in run["error"]
    assert not [f for f in p.upload_dir.rglob("*") if f.is_file()], "nothing may be uploaded on a trust failure"
    return run


def _assert_recovered(p, run):
    done = p.wait_run(("succeeded",), timeout_s=60, run_id=run["run_id"])
    assert done["error"] is None
    assert len([f for f in p.upload_dir.rglob("*.jsonl") if f.is_file()]) == 3


def test_wrong_passphrase_leaves_the_run_pending_until_restarted_with_the_right_one(
    make_source, make_pipeline, locked_sftp
):
    server, passphrase = locked_sftp
    p = _start(make_source, make_pipeline, server, ETL_SFTP_KEY_PASSPHRASE="not-" + passphrase)
    run = _assert_pending(p, "wrong passphrase", "ETL_SFTP_KEY_PASSPHRASE", secrets=(passphrase,))
    # The passphrase comes from the environment, read at start-up: the fix is a restart with the right one.
    p.procs["saver"].stop()
    p.start("saver", tag="saver-fixed", ETL_SFTP_KEY_PASSPHRASE=passphrase)
    _assert_recovered(p, run)


def test_missing_passphrase_is_named(make_source, make_pipeline, locked_sftp):
    server, _ = locked_sftp
    p = _start(make_source, make_pipeline, server)
    _assert_pending(p, "protected by a passphrase")


def test_key_the_server_does_not_know_is_refused_until_the_key_file_is_replaced(
    tmp_path, make_source, make_pipeline, locked_sftp
):
    server, passphrase = locked_sftp
    key = _keygen(tmp_path / "client_key", "ed25519", passphrase)
    p = _start(make_source, make_pipeline, server, ETL_SFTP_KEY_PATH=str(key), ETL_SFTP_KEY_PASSPHRASE=passphrase)
    run = _assert_pending(p, "refused the key")
    # Fixed in place, no restart: the key file is read at every attempt. The new key is RSA.
    _replace(key, (server.keys_dir / "id_rsa").read_bytes())
    _assert_recovered(p, run)
    assert p.procs["saver"].alive()


def test_unknown_host_is_refused_until_known_hosts_pins_it(tmp_path, make_source, make_pipeline, locked_sftp):
    server, passphrase = locked_sftp
    pinned = (server.keys_dir / "known_hosts").read_text()
    known = tmp_path / "known_hosts"
    # Pinned keys for some other port only: this server is unknown.
    known.write_text(pinned.replace(f"[127.0.0.1]:{server.port}", "[127.0.0.1]:2"))
    p = _start(make_source, make_pipeline, server, ETL_SFTP_KNOWN_HOSTS=str(known), ETL_SFTP_KEY_PASSPHRASE=passphrase)
    run = _assert_pending(p, "not in known_hosts", "refusing an unknown host key")
    _replace(known, pinned.encode())
    _assert_recovered(p, run)


def test_changed_host_key_is_refused_until_the_pin_is_updated(tmp_path, make_source, make_pipeline, locked_sftp):
    server, passphrase = locked_sftp
    pinned = (server.keys_dir / "known_hosts").read_text()
    known = tmp_path / "known_hosts"
    entry = f"[127.0.0.1]:{server.port}"
    # The same host name with other keys: what an impostor (or a re-keyed server) presents.
    lines = []
    for kind in ("ed25519", "rsa"):
        pub = _keygen(tmp_path / f"impostor_{kind}", kind, "").with_suffix(".pub").read_text().split()
        lines.append(f"{entry} {pub[0]} {pub[1]}\n")
    known.write_text("".join(lines))
    p = _start(make_source, make_pipeline, server, ETL_SFTP_KNOWN_HOSTS=str(known), ETL_SFTP_KEY_PASSPHRASE=passphrase)
    run = _assert_pending(p, "does not match known_hosts", "refusing to connect")
    _replace(known, pinned.encode())
    _assert_recovered(p, run)
