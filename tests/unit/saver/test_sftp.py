"""Loading the SFTP client key: ed25519 and RSA, OpenSSH and PEM, with and without a passphrase; clear refusals."""

import subprocess

import pytest

from saver import sftp
from saver.settings import SaverSettings


def _keygen(path, kind, passphrase, pem=False):
    args = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", str(path)]
    if kind == "rsa":
        args += ["-b", "2048"]
    if pem:
        args += ["-m", "PEM"]
    subprocess.run(args, check=True)
    return path.read_bytes()


KINDS = [("ed25519", False, "ssh-ed25519"), ("rsa", False, "ssh-rsa"), ("rsa", True, "ssh-rsa")]


@pytest.mark.parametrize(("kind", "pem", "name"), KINDS)
def test_key_with_passphrase_loads_with_it(tmp_path, kind, pem, name):
    data = _keygen(tmp_path / "k", kind, "correct horse", pem)
    assert sftp.load_key(data, "correct horse", "k").get_name() == name


@pytest.mark.parametrize(("kind", "pem", "name"), KINDS)
def test_wrong_or_missing_passphrase_is_refused_clearly(tmp_path, kind, pem, name):
    data = _keygen(tmp_path / "k", kind, "correct horse", pem)
    with pytest.raises(sftp.UploadRefused, match="wrong passphrase") as err:
        sftp.load_key(data, "battery staple", "k")
    assert "battery staple" not in str(err.value) and "correct horse" not in str(err.value)
    with pytest.raises(sftp.UploadRefused, match="protected by a passphrase"):
        sftp.load_key(data, None, "k")


def test_passphrase_given_for_a_plain_key_is_a_mismatch(tmp_path):
    data = _keygen(tmp_path / "k", "ed25519", "")
    assert sftp.load_key(data, None, "k").get_name() == "ssh-ed25519"
    with pytest.raises(sftp.UploadRefused, match="has no passphrase"):
        sftp.load_key(data, "unneeded", "k")


def test_not_a_key_is_refused(tmp_path):
    with pytest.raises(sftp.UploadRefused, match="not a private key"):
        sftp.load_key(b"ssh-ed25519 AAAA public-only\n", None, "k")


def test_key_text_from_a_secret_wins_over_the_path(tmp_path):
    data = _keygen(tmp_path / "k", "ed25519", "pw")
    # The variable often loses its trailing new line; the path points nowhere.
    s = SaverSettings(
        sftp_key=data.decode().rstrip("\n"),
        sftp_key_passphrase="pw",
        sftp_key_path=str(tmp_path / "missing"),
        _env_file=None,
    )
    assert sftp._client_key(s).get_name() == "ssh-ed25519"
    s = SaverSettings(sftp_key_path=str(tmp_path / "missing"), _env_file=None)
    with pytest.raises(sftp.UploadRefused, match="unreadable"):
        sftp._client_key(s)
