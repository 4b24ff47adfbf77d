"""`make keys` (scripts/gen-keys.sh ssh_keys sftp 22) makes every key file the compose file mounts."""

import os
import stat
import subprocess

import paramiko

from tests.compose.composefile import ROOT, example_env, load, mounts, service_env


def _gen(keys, passphrase: str = "") -> None:
    env = {**os.environ, "SFTP_KEY_PASSPHRASE": passphrase}
    subprocess.run(
        [str(ROOT / "scripts" / "gen-keys.sh"), str(keys), "sftp", "22"], check=True, env=env, capture_output=True
    )


def test_keys_cover_every_mount_and_pin_the_sftp_service(tmp_path):
    keys = tmp_path / "ssh_keys"
    _gen(keys)
    model = load(example_env())
    for name in ("sftp", "saver"):
        for m in mounts(model["services"][name]):
            if m.source.startswith("./ssh_keys/"):
                assert (keys / m.source.removeprefix("./ssh_keys/")).is_file(), f"{name}: {m.source} not made"
    assert (keys / "sftp_user.pub").read_text() == (keys / "id_ed25519.pub").read_text()
    for private in ("id_ed25519", "ssh_host_ed25519_key", "ssh_host_rsa_key"):
        assert stat.S_IMODE((keys / private).stat().st_mode) == 0o600
    # The saver pins the server by the name and port compose gives it.
    saver = service_env(model, "saver", example_env())
    host, port = saver["ETL_SFTP_HOST"], int(saver["ETL_SFTP_PORT"])
    known = paramiko.HostKeys(str(keys / "known_hosts"))
    entry = host if port == 22 else f"[{host}]:{port}"
    pinned = known.lookup(entry)
    assert pinned is not None and set(pinned.keys()) == {"ssh-ed25519", "ssh-rsa"}
    host_key = paramiko.Ed25519Key.from_private_key_file(str(keys / "ssh_host_ed25519_key"))
    assert pinned["ssh-ed25519"] == host_key


def test_keys_are_kept_on_a_second_run(tmp_path):
    keys = tmp_path / "ssh_keys"
    _gen(keys)
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    _gen(keys)
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == before


def test_client_key_with_a_passphrase(tmp_path):
    keys = tmp_path / "ssh_keys"
    _gen(keys, passphrase="correct horse")
    key = paramiko.Ed25519Key.from_private_key_file(str(keys / "id_ed25519"), password="correct horse")
    assert key.get_name() == "ssh-ed25519"
