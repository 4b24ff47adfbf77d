"""known_hosts files as people keep them, against a real OpenSSH server: the saver never exits on one."""

import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.faults.test_real_world_inputs import scan, source_secrets


def _other_key() -> str:
    """``ssh-ed25519 AAAA...`` of a key no server here has."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _server_keys(sftp_server) -> dict[str, str]:
    """The server's public host keys, ``type base64`` by type."""
    out = {}
    for kind in ("ed25519", "rsa"):
        text = (sftp_server.keys_dir / f"ssh_host_{kind}_key.pub").read_text().split()
        out[kind] = f"{text[0]} {text[1]}"
    return out


def _wait_error(p, needle: str, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = p.runs()[-1] if p.runs() else None
        if run is not None and run["status"] == "upload_pending" and needle in (run["error"] or ""):
            return run
        time.sleep(0.1)
    raise AssertionError(f"no upload_pending run with {needle!r}: {dict(run) if run else None}")


def test_unusable_lines_are_skipped_with_their_line_numbers(tmp_path, make_source, make_pipeline, sftp_server):
    keys = _server_keys(sftp_server)
    host = f"[127.0.0.1]:{sftp_server.port}"
    known = tmp_path / "known_hosts"
    known.write_text(
        "# kept by hand\n"
        f"@cert-authority *.corp.example {keys['rsa']}\n"  # line 2
        f"@revoked * {_other_key()}\n"  # line 3: valid, and not the server's key
        f"|1|not*base64|neither* {keys['ed25519']}\n"  # line 4: malformed hashed host
        f"{host} ssh-ed25519 !!!not-base64!!!\n"  # line 5
        f"{host} ssh-foo AAAAB3NzaC1yc2E=\n"  # line 6: unknown key type
        f"{host} ssh-ed25519-cert-v01@openssh.com {keys['ed25519'].split()[1]}\n"  # line 7: certificate type
        "only-two fields\n"  # line 8
        "@marker-of-the-future * ssh-ed25519 AAAA\n"  # line 9
        "\n"
        f"{host} {keys['ed25519']}\n"
    )
    src = make_source(count=30)
    p = make_pipeline(src, ETL_SFTP_KNOWN_HOSTS=str(known))
    p.start_workers()
    assert p.extract().returncode == 0
    run = p.wait_run()
    assert (run["status"], run["error"], run["valid_count"], run["raw_count"]) == ("succeeded", None, 30, 30)
    saver_log = p.procs["saver"].output()
    skipped = [line for line in saver_log.splitlines() if "known_hosts line skipped" in line]
    for number in (2, 4, 5, 6, 7, 8, 9):
        assert sum(f'"line": {number},' in s or f"line={number} " in s for s in skipped) == 1, (number, skipped)
    assert len(skipped) == 7
    assert p.procs["saver"].alive()
    assert not scan(p, {"log:saver": saver_log}, source_secrets(src, 30))


def test_revoked_or_no_usable_key_leaves_the_run_upload_pending(tmp_path, make_source, make_pipeline, sftp_server):
    keys = _server_keys(sftp_server)
    host = f"[127.0.0.1]:{sftp_server.port}"
    known = tmp_path / "known_hosts"
    # The server's ed25519 key is revoked: listed for its host or not, it is never trusted.
    known.write_text(f"@revoked * {keys['ed25519']}\n{host} {keys['ed25519']}\nother.example {_other_key()}\n")
    src = make_source(count=30)
    p = make_pipeline(src, ETL_SFTP_KNOWN_HOSTS=str(known))
    p.start_workers()
    assert p.extract().returncode == 0
    run = _wait_error(p, "marked @revoked in known_hosts")
    assert run["valid_count"] == 30 and not list(p.upload_dir.rglob("*.jsonl"))

    # Nothing usable at all: the reason names the file and the lines.
    known.write_text(f"@cert-authority * {keys['rsa']}\n{host} ssh-ed25519 !!!\n")
    run = _wait_error(p, f"known_hosts {known} has no usable host key (line 1: @cert-authority")
    assert "line 2: unreadable key" in run["error"]
    assert p.procs["saver"].alive()

    # Fixed by hand: the next try uploads, without a restart.
    known.write_text(f"{host} {keys['rsa']}\n")
    run = p.wait_run()
    assert (run["status"], run["error"]) == ("succeeded", None)
    assert len(list(p.upload_dir.rglob("*.jsonl"))) == 3
    assert p.procs["saver"].alive() and p.procs["saver"].popen.returncode is None
    assert (p.count("processed_users", run["run_id"]), p.count("invalid_users", run["run_id"])) == (30, 0)
    assert not scan(p, {"log:saver": p.procs["saver"].output()}, source_secrets(src, 30))
