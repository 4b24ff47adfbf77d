"""A full pipeline with every secret set and an error path taken: no secret and no raw PII shows anywhere."""

import secrets

import httpx

import testbed as tb
from tests.integration._security import age_keygen, sftp_env, start_locked_sftp
from tests.support import real_users

SENSITIVE_PATHS = (("password",), ("ssn",), ("ein",), ("bank", "cardNumber"), ("bank", "iban"), ("crypto", "wallet"))


def _source_users(source, n: int) -> list[dict]:
    return [source.source.user(i) for i in range(n)]


def _raw_pii(users: list[dict]) -> set[str]:
    """The unmasked sensitive values of the source's users (long enough not to match by chance)."""
    found = set()
    for user in users:
        for path in SENSITIVE_PATHS:
            value = user
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, (str, int)) and len(str(value)) >= 6:
                found.add(str(value))
    return found


def test_no_secret_and_no_raw_pii_in_logs_metrics_errors_or_api(tmp_path, make_source, make_pipeline):
    server, passphrase = start_locked_sftp(tmp_path / "sftp")
    try:
        _scenario(tmp_path, make_source, make_pipeline, server, passphrase)
    finally:
        server.stop()


def _scenario(tmp_path, make_source, make_pipeline, server, passphrase):
    users = real_users()
    if users is not None:
        users = [dict(u) for u in users]
        for u in users[::20]:
            u["age"] = 17  # some rejects, so the dead-letter path carries PII too
    source = make_source(count=150, bad_every=20, users=users)
    token = "tok-" + secrets.token_urlsafe(24)
    wrong_passphrase = "wrong-" + secrets.token_urlsafe(12)
    identity = tmp_path / "identity.txt"
    public = age_keygen(identity)
    identity_secret = identity.read_text().strip().splitlines()[-1]
    key_text = (server.keys_dir / "id_ed25519").read_text()
    key_body = [line for line in key_text.splitlines() if len(line) >= 20 and "PRIVATE KEY" not in line]
    env = sftp_env(
        server, ETL_SFTP_KEY=key_text, ETL_SFTP_KEY_PATH="/nonexistent", ETL_SFTP_KEY_PASSPHRASE=wrong_passphrase
    )
    p = make_pipeline(
        source,
        **env,
        ETL_ENCRYPTION_ENABLED="true",
        ETL_ENCRYPTION_RECIPIENTS=public,
        ETL_API_TOKEN=token,
        ETL_LOG_LEVEL="DEBUG",
    )
    ports = {name: tb.free_port() for name in ("transformer", "saver", "api")}
    p.start("transformer", ETL_OPS_PORT=str(ports["transformer"]))
    p.start("saver", ETL_OPS_PORT=str(ports["saver"]))
    p.start("api", ETL_API_PORT=str(ports["api"]), ETL_API_HOST="127.0.0.1")
    extract = p.extract()
    assert extract.returncode == 0, extract.stdout + extract.stderr
    # First the error path: a wrong passphrase leaves the run pending and logs the failure.
    pending = p.wait_run(("upload_pending",))
    assert "wrong passphrase" in pending["error"]
    p.procs["saver"].stop()
    p.start("saver", tag="saver-fixed", ETL_SFTP_KEY_PASSPHRASE=passphrase, ETL_OPS_PORT=str(ports["saver"]))
    run = p.wait_run(("succeeded",))
    assert run["invalid_count"] > 0

    base = f"http://127.0.0.1:{ports['api']}"
    tb.wait_port(ports["api"])
    answers = [
        httpx.get(f"{base}/etl_runs", headers={"Authorization": f"Bearer {token}"}, timeout=10),
        httpx.get(f"{base}/etl_runs", headers={"Authorization": f"Bearer {token}x"}, timeout=10),
        httpx.get(f"{base}/metrics", timeout=10),
    ]
    assert answers[0].status_code == 200 and answers[1].status_code == 401
    answers += [httpx.get(f"http://127.0.0.1:{ports[n]}/metrics", timeout=10) for n in ("transformer", "saver")]

    texts = {f"log:{name}": proc.output() for name, proc in p.procs.items()}
    texts["log:extractor"] = extract.stdout + extract.stderr
    texts |= {f"http:{a.request.url}": a.text for a in answers}
    with p.db() as db:
        texts["db:errors"] = "\n".join(str(r[0]) for r in db.execute("SELECT error FROM etl_runs"))
    texts["dead-letters"] = str(p.redis.xrange(p.keys.dead_stream))
    # The scan must look at real output: error lines and the run's own lines are there.
    assert "wrong passphrase" in texts["log:saver"] and run["run_id"] in texts["log:saver-fixed"]

    secret_values = {
        "api token": token,
        "key passphrase": passphrase,
        "wrong passphrase": wrong_passphrase,
        "age identity": identity_secret,
    } | {f"private key line {i}": b for i, b in enumerate(key_body)}
    pii = _raw_pii(users if users is not None else _source_users(source, 150))
    assert len(pii) > 100
    leaks = [(where, what) for where, text in texts.items() for what, value in secret_values.items() if value in text]
    leaks += [(where, f"raw PII ending {v[-4:]}") for where, text in texts.items() for v in pii if v in text]
    # The database keeps masked copies only.
    db_bytes = b"".join(f.read_bytes() for f in p.db_path.parent.glob("data.db*"))
    leaks += [("database", f"raw PII ending {v[-4:]}") for v in pii if v.encode() in db_bytes]
    assert not leaks, leaks[:20]
