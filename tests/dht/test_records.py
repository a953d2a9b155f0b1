"""Identity, signed records, and keyword normalisation (incl. hypothesis properties)."""

from __future__ import annotations

import os
import stat
import time
import unicodedata
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht import DhtConfig, Identity, InvalidRecord, ProviderRecord, RecordTooLarge
from dht.keywords import normalize_words
from dht.records import (
    decode_and_verify,
    decode_record,
    encode_record,
    make_keyword,
    make_provider,
    make_withdrawal,
    verify,
)

CFG = DhtConfig.for_tests()
ALICE = Identity.generate()
MALLORY = Identity.generate()
FID = "ab" * 32


class TestIdentity:
    def test_created_with_mode_0600_and_reloaded_with_same_id(self, tmp_path: Path) -> None:
        path = tmp_path / "data" / "identity.key"
        first = Identity.load_or_create(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        again = Identity.load_or_create(path)
        assert again.node_id == first.node_id
        assert len(first.node_id) == 20 and len(first.node_id_hex) == 40
        assert first.node_id_hex == first.node_id.hex()

    def test_garbage_key_file_is_a_clear_error(self, tmp_path: Path) -> None:
        path = tmp_path / "identity.key"
        path.write_bytes(b"not a key")
        with pytest.raises(Exception, match="not a PEM private key"):
            Identity.load_or_create(path)

    def test_loose_permissions_are_tightened(self, tmp_path: Path) -> None:
        path = tmp_path / "identity.key"
        Identity.load_or_create(path)
        os.chmod(path, 0o644)
        Identity.load_or_create(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def provider(**changes: object) -> ProviderRecord:
    rec = make_provider(ALICE, FID, "Holiday Photos.zip", 1234, "127.0.0.1:5000", 30)
    return replace(rec, **changes) if changes else rec


class TestRecordChecks:
    def test_valid_record_round_trips(self) -> None:
        rec = provider()
        assert decode_and_verify(encode_record(rec), CFG) == rec
        assert rec.expires == rec.issued_at + rec.ttl

    def test_forged_record_is_rejected(self) -> None:
        # Mallory signs a record that claims to come from Alice's node id
        forged = make_provider(MALLORY, FID, "x.bin", 1, "10.0.0.1:1", 30)
        forged = replace(forged, node_id=ALICE.node_id_hex)
        with pytest.raises(InvalidRecord, match="node_id is not derived"):
            verify(forged, CFG)
        # ...or uses Alice's key material with its own signature
        forged = replace(forged, public_key=ALICE.public_key)
        with pytest.raises(InvalidRecord, match="bad signature"):
            verify(forged, CFG)

    @pytest.mark.parametrize("field,value", [
        ("grpc", "10.6.6.6:666"), ("name", "evil.exe"), ("size", 1), ("ttl", 29),
    ])
    def test_tampered_record_is_rejected(self, field: str, value: object) -> None:
        with pytest.raises(InvalidRecord, match="bad signature"):
            verify(provider(**{field: value}), CFG)

    def test_flipped_byte_anywhere_never_verifies(self) -> None:
        raw = encode_record(provider())
        for i in range(len(raw)):
            bad = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]
            with pytest.raises(InvalidRecord):
                decode_and_verify(bad, CFG)

    def test_far_future_and_expired_and_long_ttl_are_rejected(self) -> None:
        now = time.time()
        future = make_provider(ALICE, FID, "a.bin", 1, "h:1", 30, issued_at=now + 3600)
        with pytest.raises(InvalidRecord, match="future"):
            verify(future, CFG)
        old = make_provider(ALICE, FID, "a.bin", 1, "h:1", 30, issued_at=now - 31)
        with pytest.raises(InvalidRecord, match="expired"):
            verify(old, CFG)
        long = make_provider(ALICE, FID, "a.bin", 1, "h:1", CFG.max_record_ttl + 1)
        with pytest.raises(InvalidRecord, match="exceeds the maximum"):
            verify(long, CFG)

    def test_oversize_record_is_rejected(self) -> None:
        small = DhtConfig.for_tests(max_record_bytes=256)
        rec = make_provider(ALICE, FID, "n" * 200, 1, "127.0.0.1:1", 30)
        with pytest.raises(RecordTooLarge):
            verify(rec, small)
        with pytest.raises(RecordTooLarge):
            decode_record(encode_record(rec), max_record_bytes=256)
        with pytest.raises(InvalidRecord, match="longer than"):
            make_provider(ALICE, FID, "n" * 300, 1, "127.0.0.1:1", 30)

    def test_non_canonical_encoding_is_rejected(self) -> None:
        import msgpack

        rec = provider()
        fields = msgpack.unpackb(encode_record(rec))
        fields[8] = int(fields[8])  # issued_at as int: same value, other encoding
        with pytest.raises(InvalidRecord):
            decode_record(msgpack.packb(fields, use_bin_type=True))

    @pytest.mark.parametrize("grpc", ["nohost", ":1", "h:0", "h:70000", "h: 1", "h:01"])
    def test_bad_grpc_address_is_rejected(self, grpc: str) -> None:
        with pytest.raises(InvalidRecord, match="grpc"):
            make_provider(ALICE, FID, "a.bin", 1, grpc, 30)

    def test_keyword_must_be_normalised_and_withdrawal_key_bound(self) -> None:
        with pytest.raises(InvalidRecord, match="normalised"):
            make_keyword(ALICE, "Holiday", FID, "Holiday.zip", 1, 30)
        with pytest.raises(InvalidRecord, match="key_name"):
            make_withdrawal(ALICE, "file:" + "cd" * 32, FID, 30)
        ok = make_withdrawal(ALICE, "kw:holiday", FID, 30)
        assert decode_and_verify(encode_record(ok), CFG) == ok


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\x00"),
    min_size=1, max_size=60,
)


class TestProperties:
    @given(
        name=names, size=st.integers(0, 2**63 - 1),
        host=st.from_regex(r"[a-z0-9.\-]{1,30}", fullmatch=True), port=st.integers(1, 65535),
        ttl=st.integers(1, CFG.max_record_ttl), fid=st.binary(min_size=32, max_size=32),
    )
    def test_provider_encode_decode_round_trip(self, name: str, size: int, host: str,
                                               port: int, ttl: int, fid: bytes) -> None:
        rec = make_provider(ALICE, fid.hex(), name, size, f"{host}:{port}", ttl)
        raw = encode_record(rec)
        assert decode_record(raw, max_record_bytes=4096) == rec
        assert encode_record(decode_record(raw, max_record_bytes=4096)) == raw

    @given(name=names, fid=st.binary(min_size=32, max_size=32))
    def test_keyword_records_round_trip_for_every_word(self, name: str, fid: bytes) -> None:
        for word in normalize_words(name, 3):
            rec = make_keyword(ALICE, word, fid.hex(), name, 7, 30)
            assert decode_record(encode_record(rec), max_record_bytes=4096) == rec

    @given(st.binary(max_size=600))
    def test_decoder_raises_only_invalid_record(self, data: bytes) -> None:
        try:
            decode_and_verify(data, CFG)
        except InvalidRecord:
            pass

    @given(st.text(max_size=80))
    def test_normalisation_is_idempotent_and_clean(self, text: str) -> None:
        words = normalize_words(text)
        assert normalize_words(" ".join(words)) == words
        assert len(words) == len(set(words))
        for word in words:
            assert len(word) >= 2
            assert word == word.casefold()
            assert not any(unicodedata.combining(ch) for ch in word)
            assert all(ch.isalnum() for ch in word)

    @given(st.text(max_size=40))
    def test_case_and_composition_do_not_matter(self, text: str) -> None:
        assert normalize_words(text.casefold()) == normalize_words(text)
        assert normalize_words(unicodedata.normalize("NFC", text)) == normalize_words(text)
        assert normalize_words(unicodedata.normalize("NFD", text)) == normalize_words(text)


class TestKeywordExamples:
    @pytest.mark.parametrize("name,words", [
        ("Holiday_Photos-2024.ZIP", ["holiday", "photos", "2024", "zip"]),
        ("Été à la plage.jpg", ["ete", "plage", "jpg"]),
        ("The Art of War", ["art", "war"]),
        ("ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", ["fullwidth", "text"]),
        ("a b c", []),
        ("Straße", ["strasse"]),
        ("naïve café", ["naive", "cafe"]),
    ])
    def test_examples(self, name: str, words: list[str]) -> None:
        assert normalize_words(name) == words


class TestOldVersion:
    """Version-1 records named files by whole-file SHA-256; they are refused by name."""

    def _v1_provider(self) -> bytes:
        import msgpack

        rec = provider()
        fields = [1, *rec.signed_fields()[1:]]
        sig = ALICE.sign(b"kadshare/record/1\n" + msgpack.packb(fields, use_bin_type=True))
        return msgpack.packb([*fields, sig], use_bin_type=True)

    def test_a_correctly_signed_version_1_record_is_refused_with_the_reason(self) -> None:
        data = self._v1_provider()
        with pytest.raises(InvalidRecord, match="version-1 record refused.*upgrade"):
            decode_record(data)
        with pytest.raises(InvalidRecord, match="version-1"):
            decode_and_verify(data, CFG)

    def test_new_records_carry_version_2(self) -> None:
        import msgpack

        assert msgpack.unpackb(encode_record(provider()))[0] == 2


class TestPartialProvider:
    """A partial provider record is a version-2 provider array with ``true`` before the
    signature; a full provider's bytes are what they were before partial records existed."""

    def _partial(self) -> ProviderRecord:
        return make_provider(ALICE, FID, "movie.bin", 9, "127.0.0.1:5000", 60, partial=True)

    def test_round_trip_and_the_flag_is_signed(self) -> None:
        import msgpack

        rec = self._partial()
        data = encode_record(rec)
        back = decode_and_verify(data, CFG)
        assert isinstance(back, ProviderRecord) and back.partial
        arr = msgpack.unpackb(data)
        assert len(arr) == 12 and arr[0] == 2 and arr[10] is True
        stripped = msgpack.packb([*arr[:10], arr[11]], use_bin_type=True)  # flag dropped
        with pytest.raises(InvalidRecord):
            decode_and_verify(stripped, CFG)

    def test_a_full_provider_keeps_eleven_fields(self) -> None:
        import msgpack

        assert len(msgpack.unpackb(encode_record(provider()))) == 11
        assert not decode_record(encode_record(provider())).partial  # type: ignore[union-attr]

    def test_a_twelfth_field_other_than_true_is_refused(self) -> None:
        import msgpack

        arr = msgpack.unpackb(encode_record(self._partial()))
        for value in (False, 1, "yes"):
            bad = msgpack.packb([*arr[:10], value, arr[11]], use_bin_type=True)
            with pytest.raises(InvalidRecord, match="12th field must be true"):
                decode_record(bad)
