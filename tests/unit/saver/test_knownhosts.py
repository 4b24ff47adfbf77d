"""Parsing known_hosts files as people keep them: usable lines, skipped lines with their numbers, revoked keys."""

import base64

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

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


def _public_lines() -> list[str]:
    """One OpenSSH public key line of each type the saver trusts."""
    privates = [
        ed25519.Ed25519PrivateKey.generate(),
        rsa.generate_private_key(65537, 2048),
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP521R1()),
    ]
    return [
        k.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        for k in privates
    ]


def test_a_key_cut_at_any_base64_boundary_is_skipped_never_trusted():
    for line in _public_lines():
        key_type, blob = line.split()
        for cut in range(4, len(blob), 4):  # every cut that still decodes as base64
            kh = knownhosts.parse(f"h.example {key_type} {blob[:cut]}\n", "kh")
            assert kh.usable == 0 and not kh.keys, (key_type, cut)
            assert [n for n, _ in kh.skipped] == [1]
            assert kh.skipped[0][1].startswith("unreadable key"), kh.skipped[0]
        assert knownhosts.parse(f"h.example {line}\n", "kh").usable == 1


def test_a_blob_of_another_type_or_with_bytes_beyond_the_key_is_skipped():
    ed_line, rsa_line, ec_line, *_ = _public_lines()
    ed_blob, rsa_blob = ed_line.split()[1], rsa_line.split()[1]
    ec_type, ec_blob = ec_line.split()
    extra = base64.b64encode(base64.b64decode(ec_blob) + b"\0\0\0").decode()
    kh = knownhosts.parse(
        f"a.example ssh-rsa {ed_blob}\nb.example ssh-ed25519 {rsa_blob}\nc.example {ec_type} {extra}\n", "kh"
    )
    assert kh.usable == 0 and [n for n, _ in kh.skipped] == [1, 2, 3]
    assert "not the line's 'ssh-rsa'" in kh.skipped[0][1] and kh.skipped[2][1].startswith("unreadable key")


def test_a_cut_revoked_line_is_skipped_and_revokes_nothing():
    key = _key()
    key_type, blob = key.split()
    kh = knownhosts.parse(f"@revoked * {key_type} {blob[:40]}\nh.example {key}\n", "kh")
    assert kh.usable == 1 and not kh.revoked and [n for n, _ in kh.skipped] == [1]
