"""Parsing known_hosts files as people keep them: usable lines, skipped lines with their numbers, revoked keys."""

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from saver import knownhosts


def _key() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _hashed(host: str) -> str:
    return paramiko.HostKeys.hash_host(host)


def test_every_line_shape_is_kept_or_skipped_with_its_number():
    good, other, revoked = _key(), _key(), _key()
    text = "\n".join(
        [
            "# comment",
            f"@cert-authority *.corp.example {other}",
            f"a.example,b.example {good}",
            f"@revoked * {revoked}",
            f"c.example {revoked}",
            f"{_hashed('d.example')} {other}",
            "|1|bad|bad ssh-ed25519 AAAA",
            "e.example ssh-ed25519 @@@",
            "e.example ssh-unknown AAAAC3NzaC1lZDI1NTE5",
            "e.example\tssh-ed25519",
            "",
            f"  f.example   {good}  trailing comment",
        ]
    )
    kh = knownhosts.parse(text, "kh")
    assert [n for n, _ in kh.skipped] == [2, 7, 8, 9, 10]
    assert kh.usable == 3  # a/b, the hashed d, f; c's key is revoked
    client = paramiko.SSHClient()
    knownhosts.pin(client, kh)
    trusted = client.get_host_keys()
    assert trusted.lookup("a.example") and trusted.lookup("d.example") and trusted.lookup("f.example")
    assert trusted.lookup("c.example") is None


def test_a_file_with_nothing_usable_parses_to_nothing():
    kh = knownhosts.parse("@cert-authority * ssh-rsa AAAA\nhost ssh-rsa !!!\n", "kh")
    assert kh.usable == 0 and [n for n, _ in kh.skipped] == [1, 2]


def test_a_byte_order_mark_and_windows_line_ends_do_not_hide_the_first_line():
    key = _key()
    kh = knownhosts.parse(f"\ufeffa.example {key}\r\nb.example {key}\r\n", "kh")
    client = paramiko.SSHClient()
    knownhosts.pin(client, kh)
    assert client.get_host_keys().lookup("a.example") and client.get_host_keys().lookup("b.example")
