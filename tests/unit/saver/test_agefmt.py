"""The pure-Python age format against the reference implementations: pyrage (rage) and the age tool."""

import io
import os
import shutil
import subprocess

import pyrage
import pytest
from pyrage import x25519 as ref

from saver import agefmt, bech32
from saver.agefmt import x25519

# Chunk edges: empty, one byte, a chunk minus/plus one, exactly one and two chunks, several.
SIZES = [0, 1, agefmt.CHUNK - 1, agefmt.CHUNK, agefmt.CHUNK + 1, 2 * agefmt.CHUNK, 3 * agefmt.CHUNK + 5]


def _encrypt(data: bytes, recipients) -> bytes:
    out = io.BytesIO()
    agefmt.encrypt_io(io.BytesIO(data), out, recipients)
    return out.getvalue()


def _decrypt(blob: bytes, identities) -> bytes:
    out = io.BytesIO()
    agefmt.decrypt_io(io.BufferedReader(io.BytesIO(blob)), out, identities)
    return out.getvalue()


class TestKeys:
    def test_key_strings_are_the_reference_ones(self):
        theirs = ref.Identity.generate()
        ours = x25519.Identity.from_str(str(theirs))
        assert str(ours) == str(theirs) and str(ours.to_public()) == str(theirs.to_public())
        mine = x25519.Identity.generate()
        assert str(ref.Identity.from_str(str(mine)).to_public()) == str(mine.to_public())

    def test_malformed_keys_are_refused(self):
        public = str(x25519.Identity.generate().to_public())
        for bad in ("age1typo", public[:-1] + ("q" if public[-1] != "q" else "p"), public.upper(), ""):
            with pytest.raises(agefmt.RecipientError):
                x25519.Recipient.from_str(bad)
        secret = str(x25519.Identity.generate())
        for bad in (secret.lower(), secret[:-2], public):
            with pytest.raises(agefmt.IdentityError):
                x25519.Identity.from_str(bad)
        assert secret not in repr(x25519.Identity.from_str(secret))

    def test_bech32_reference_vector(self):
        # BIP 173 valid test vector.
        assert bech32.decode("A12UEL5L") == ("a", b"")
        assert bech32.encode("a", b"") == "a12uel5l"


@pytest.mark.parametrize("size", SIZES)
def test_files_open_with_pyrage_and_the_other_way(size):
    data = os.urandom(size)
    theirs = ref.Identity.generate()
    ours = x25519.Identity.from_str(str(theirs))
    stranger = x25519.Identity.generate().to_public()
    assert pyrage.decrypt(_encrypt(data, [stranger, ours.to_public()]), [theirs]) == data
    assert _decrypt(pyrage.encrypt(data, [theirs.to_public()]), [ours]) == data


@pytest.mark.skipif(shutil.which("age") is None, reason="the age command-line tool is not installed")
@pytest.mark.parametrize("size", [0, agefmt.CHUNK, 200_000])
def test_files_open_with_the_age_tool_and_the_other_way(tmp_path, size):
    data = os.urandom(size)
    ident = x25519.Identity.generate()
    (tmp_path / "id").write_text(f"{ident}\n")
    (tmp_path / "ours.age").write_bytes(_encrypt(data, [ident.to_public()]))
    done = subprocess.run(["age", "-d", "-i", str(tmp_path / "id"), str(tmp_path / "ours.age")], capture_output=True)
    assert done.returncode == 0 and done.stdout == data, done.stderr
    (tmp_path / "plain").write_bytes(data)
    subprocess.run(
        ["age", "-r", str(ident.to_public()), "-o", str(tmp_path / "theirs.age"), str(tmp_path / "plain")], check=True
    )
    assert _decrypt((tmp_path / "theirs.age").read_bytes(), [ident]) == data


class TestRefusals:
    """Nothing unauthenticated comes out."""

    def setup_method(self):
        self.ident = x25519.Identity.generate()
        self.data = os.urandom(2 * agefmt.CHUNK + 100)
        self.blob = _encrypt(self.data, [self.ident.to_public()])

    def test_wrong_identity_is_a_decrypt_error(self):
        with pytest.raises(agefmt.DecryptError, match="no identity"):
            _decrypt(self.blob, [x25519.Identity.generate()])

    def test_altered_header_fails_its_mac(self):
        header_end = self.blob.index(b"\n---") + 1
        # Add a stanza nobody wrote: the header MAC no longer matches.
        forged = self.blob[:header_end] + b"-> grease x\n\n" + self.blob[header_end:]
        with pytest.raises(agefmt.DecryptError, match="MAC"):
            _decrypt(forged, [self.ident])

    @pytest.mark.parametrize("cut", ["truncate_chunk", "drop_last_chunk", "append"])
    def test_truncated_or_extended_payload_is_an_oserror(self, cut):
        blob = {
            "truncate_chunk": self.blob[:-10],
            "drop_last_chunk": self.blob[: -(100 + agefmt.TAG)],
            "append": self.blob + b"x",
        }[cut]
        with pytest.raises(agefmt.PayloadError):
            _decrypt(blob, [self.ident])

    def test_flipped_payload_byte_is_an_oserror(self):
        blob = bytearray(self.blob)
        blob[len(blob) // 2] ^= 1
        with pytest.raises(OSError, match="authentication"):
            _decrypt(bytes(blob), [self.ident])

    def test_no_recipient_is_refused(self):
        with pytest.raises(agefmt.EncryptError):
            _encrypt(b"x", [])
