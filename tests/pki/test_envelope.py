"""SM2EnvelopedKey: round trip, opened independently with OpenSSL, wrong keys, tolerated layouts.

The PKI alone: the pair is issued under a stub approval. `mailbot envelope open` is tested in
tests/cli/test_pki_commands.py, the envelope of a case's pair in tests/app/test_issuance.py,
the libcrypto route against the OpenSSL CLI in test_envelope_ossl.py.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbot.pki import der, envelope, sm2
from tests.support.pki_issue import (
    SM2EnvelopedKey,
    assert_envelope_opens_with_openssl,
    issue_csr_stubbed,
)

pytest_plugins = ["tests.support.pki_issue_fixtures"]


def test_round_trip_and_layout():
    sign_d, enc_d = sm2.generate_private_key(), sm2.generate_private_key()
    data = envelope.make_envelope(sm2.public_key_of(sign_d), enc_d)
    assert envelope.open_envelope(sign_d, data) == enc_d
    env = SM2EnvelopedKey.load(data, strict=True)
    assert env["sym_alg"]["algorithm"].dotted == "1.2.156.10197.1.104.1"
    assert env["sym_alg"]["parameters"].dump() == b"\x05\x00"
    assert len(env["sm2_encrypted_private_key"].native) == 32  # d, 32 bytes, no padding
    assert env["sm2_public_key"].native == sm2.public_key_of(enc_d)


@pytest.mark.timeout(120)
def test_opened_by_openssl_independently(session, ca_state, user_csr, tmp_path):
    """The applicant's OpenSSL key opens the envelope with `pkeyutl -decrypt` + `enc -sm4-ecb`."""
    key, csr = user_csr
    pair = issue_csr_stubbed(session, ca_state, "XM-2026-0101", csr.read_bytes(),
                             company="Xiamen Test Trading")
    assert_envelope_opens_with_openssl(pair, key, tmp_path)


def test_wrong_key_says_it_does_not_fit():
    data = envelope.make_envelope(sm2.public_key_of(sm2.generate_private_key()),
                                  sm2.generate_private_key())
    with pytest.raises(envelope.EnvelopeError, match="does not fit"):
        envelope.open_envelope(sm2.generate_private_key(), data)


def test_tampering_detected():
    sign_d, enc_d = sm2.generate_private_key(), sm2.generate_private_key()
    data = bytearray(envelope.make_envelope(sm2.public_key_of(sign_d), enc_d))
    data[-1] ^= 1  # last byte of the encrypted private key
    with pytest.raises(envelope.EnvelopeError, match="does not match"):
        envelope.open_envelope(sign_d, bytes(data))
    with pytest.raises(envelope.EnvelopeError, match="not an SM2EnvelopedKey"):
        envelope.open_envelope(sign_d, b"\x30\x03\x02\x01\x00")
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_envelope(sign_d, bytes(data[:-5]))


def test_accepts_64_byte_field_and_bare_sm4_oid():
    """Other layouts in the wild: d right-aligned in 64 bytes (SDF/SKF), OID ...104 alone."""
    sign_d, enc_d = sm2.generate_private_key(), sm2.generate_private_key()
    sym = os.urandom(16)
    body = (der.tlv(0x30, der.enc_oid("1.2.156.10197.1.104"))
            + sm2.encrypt(sm2.public_key_of(sign_d), sym)
            + der.tlv(0x03, b"\x00" + sm2.public_key_of(enc_d))
            + der.tlv(0x03, b"\x00" + sm2.sm4_ecb_encrypt(sym, bytes(32) + enc_d.to_bytes(32,
                                                                                        "big"))))
    assert envelope.open_envelope(sign_d, der.tlv(0x30, body)) == enc_d


def test_other_symmetric_algorithm_refused():
    sign_d = sm2.generate_private_key()
    data = envelope.make_envelope(sm2.public_key_of(sign_d), sm2.generate_private_key())
    bad = data.replace(der.enc_oid("1.2.156.10197.1.104.1"), der.enc_oid("1.2.156.10197.1.104.2"))
    with pytest.raises(envelope.EnvelopeError, match="not SM4-ECB"):
        envelope.open_envelope(sign_d, bad)


_SIGN_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
_VALID = envelope.make_envelope(sm2.public_key_of(_SIGN_D), 12345)


@given(st.one_of(st.binary(max_size=400),
                 st.builds(lambda i, b: _VALID[:i] + bytes([b]) + _VALID[i + 1:],
                           st.integers(0, len(_VALID) - 1), st.integers(0, 255))))
def test_opener_only_ever_raises_envelope_error(data):
    try:
        d = envelope.open_envelope(_SIGN_D, data)
    except envelope.EnvelopeError:
        return
    assert d == 12345  # only an unchanged (or harmlessly re-encoded) envelope opens
