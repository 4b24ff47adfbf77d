"""age encryption of the run files: round trips, tampering, wrong keys, key files and recipients parsing."""

import hashlib
import os
import stat

import pytest

from saver import crypto
from saver.__main__ import main as saver_main
from saver.agefmt import x25519


@pytest.fixture
def pair(tmp_path):
    path = tmp_path / "identity.txt"
    public = crypto.keygen(str(path))
    return path, public


def _encrypt(tmp_path, chunks, public):
    out = tmp_path / "f.jsonl.age"
    with out.open("wb") as fh:
        size, sha = crypto.encrypt_chunks(chunks, fh, crypto.parse_recipients(public))
    return out, size, sha


class TestRoundTrip:
    """What goes in comes out, byte for byte, through the operator's decrypt command."""

    def test_streamed_rows_decrypt_to_the_same_bytes(self, tmp_path, pair):
        identity, public = pair
        rows = [b'{"id": %d, "pad": "%s"}\n' % (i, b"x" * (i % 300)) for i in range(5000)]
        out, size, sha = _encrypt(tmp_path, iter(rows), public)
        assert size == out.stat().st_size
        assert sha == hashlib.sha256(out.read_bytes()).hexdigest()
        assert b'"id"' not in out.read_bytes()
        assert saver_main(["decrypt", "-i", str(identity), str(out), str(tmp_path / "plain")]) == 0
        assert (tmp_path / "plain").read_bytes() == b"".join(rows)

    def test_empty_file_round_trips(self, tmp_path, pair):
        identity, public = pair
        out, _, _ = _encrypt(tmp_path, iter([]), public)
        crypto.decrypt_file(out, tmp_path / "plain", crypto.load_identities(str(identity)))
        assert (tmp_path / "plain").read_bytes() == b""

    def test_any_of_several_recipients_can_decrypt(self, tmp_path, pair):
        identity, public = pair
        other = tmp_path / "other.txt"
        other_public = crypto.keygen(str(other))
        out, _, _ = _encrypt(tmp_path, iter([b"a\n"]), f"{other_public}, {public}")
        for ident in (identity, other):
            crypto.decrypt_file(out, tmp_path / "p", crypto.load_identities(str(ident)))
            assert (tmp_path / "p").read_bytes() == b"a\n"

    def test_file_to_file_encryption(self, tmp_path, pair):
        identity, public = pair
        src = tmp_path / "src"
        src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
        crypto.encrypt_file(src, tmp_path / "src.age", crypto.parse_recipients(public))
        crypto.decrypt_file(tmp_path / "src.age", tmp_path / "back", crypto.load_identities(str(identity)))
        assert (tmp_path / "back").read_bytes() == src.read_bytes()


class TestFailuresAreLoud:
    """Decryption never yields altered or partial plaintext."""

    @pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
    def test_one_flipped_byte_fails_and_writes_nothing(self, tmp_path, pair, capsys, where):
        identity, public = pair
        out, _, _ = _encrypt(tmp_path, iter([b"x" * 200_000]), public)
        data = bytearray(out.read_bytes())
        data[min(int(len(data) * where), len(data) - 1)] ^= 0x01
        out.write_bytes(bytes(data))
        assert saver_main(["decrypt", "-i", str(identity), str(out), str(tmp_path / "plain")]) == 1
        assert "cannot decrypt" in capsys.readouterr().err
        assert not (tmp_path / "plain").exists() and not (tmp_path / "plain.part").exists()

    def test_truncated_file_fails(self, tmp_path, pair):
        identity, public = pair
        out, _, _ = _encrypt(tmp_path, iter([b"y" * 150_000]), public)
        out.write_bytes(out.read_bytes()[:-100])
        with pytest.raises(crypto.CryptoError, match="altered or truncated"):
            crypto.decrypt_file(out, tmp_path / "plain", crypto.load_identities(str(identity)))

    def test_wrong_identity_fails(self, tmp_path, pair):
        _, public = pair
        out, _, _ = _encrypt(tmp_path, iter([b"z\n"]), public)
        stranger = tmp_path / "stranger.txt"
        crypto.keygen(str(stranger))
        with pytest.raises(crypto.CryptoError, match="not encrypted to this identity"):
            crypto.decrypt_file(out, tmp_path / "plain", crypto.load_identities(str(stranger)))
        assert not (tmp_path / "plain").exists()

    def test_plaintext_input_is_refused(self, tmp_path, pair):
        identity, _ = pair
        (tmp_path / "plain.jsonl").write_bytes(b'{"a": 1}\n')
        with pytest.raises(crypto.CryptoError):
            crypto.decrypt_file(tmp_path / "plain.jsonl", tmp_path / "out", crypto.load_identities(str(identity)))


class TestKeys:
    def test_keygen_writes_a_private_file_and_refuses_to_overwrite(self, tmp_path, capsys):
        path = tmp_path / "id.txt"
        assert saver_main(["keygen", "-o", str(path)]) == 0
        public = capsys.readouterr().out.strip()
        assert public.startswith("age1")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert str(crypto.load_identities(str(path))[0].to_public()) == public
        before = path.read_bytes()
        assert saver_main(["keygen", "-o", str(path)]) == 1
        assert path.read_bytes() == before

    def test_bad_identity_line_is_reported_without_echoing_it(self, tmp_path):
        secret_looking = "AGE-SECRET-KEY-1NOTREALLYAKEYBUTSECRETLOOKING"
        path = tmp_path / "id.txt"
        path.write_text(f"# comment\n{secret_looking}\n")
        with pytest.raises(crypto.CryptoError) as err:
            crypto.load_identities(str(path))
        assert "line 2" in str(err.value) and secret_looking not in str(err.value)

    def test_recipients_from_list_and_file_with_comments(self, tmp_path):
        a, b = (str(x25519.Identity.generate().to_public()) for _ in range(2))
        f = tmp_path / "recipients.txt"
        f.write_text(f"# team key\n{b}  # rotation 2026\n\n")
        got = crypto.load_recipients(a, str(f))
        assert [str(r) for r in got] == [a, b]

    def test_malformed_recipient_is_named(self):
        with pytest.raises(crypto.CryptoError, match="age1typo"):
            crypto.parse_recipients("age1typo")

    def test_settings_refuse_encryption_without_recipients(self):
        from pydantic import ValidationError

        from saver.settings import SaverSettings

        with pytest.raises(ValidationError, match="ETL_ENCRYPTION_RECIPIENTS"):
            SaverSettings(encryption_enabled=True, _env_file=None)
