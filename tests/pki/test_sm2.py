"""Strict SM2: standard vectors, every backend against gmssl and OpenSSL, negative vectors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gmssl import sm2 as gm_sm2
from hypothesis import given
from hypothesis import strategies as st

from mailbot.pki import der, sm2
from mailbot.pki.sm2 import N, SM2Error
from tests.support import sm2_reference
from tests.support.pki_csr import STD_ID, openssl, sm2_key, workdir
from tests.support.pki_issue import independent_verify

# GB/T 32918.5-2017 Annex A / GM/T 0003.5-2012 A.2 (standards.md §2.5)
VEC_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
VEC_X = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
VEC_Y = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
VEC_Z = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3"
VEC_E = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640"
VEC_K = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21"
VEC_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
VEC_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
VEC_M = b"message digest"
VEC_PUB = bytes.fromhex("04" + VEC_X + VEC_Y)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=sorted(sm2.BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = sm2.use_backend(request.param)
    yield request.param
    sm2.use_backend(previous)


def gm(d: int | None, pub: bytes, mode: int = 1) -> gm_sm2.CryptSM2:
    """The pure-Python gmssl package, fed the way its pitfalls require (no 04, hex)."""
    return gm_sm2.CryptSM2(private_key=f"{d:064x}" if d else "", public_key=pub[1:].hex(),
                           mode=mode)


# --- SM3 / SM4 ---------------------------------------------------------------------------------

def test_sm3_vectors() -> None:
    assert sm2.sm3(b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
    assert sm2.sm3(b"abcd" * 16).hex() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732")
    assert sm2.sm3(b"").hex() == (
        "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b")


def test_sm4_ecb_vector_and_openssl() -> None:
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    assert sm2.sm4_ecb_encrypt(key, key).hex() == "681edf34d206965e86b3e94f536e4246"
    data = bytes(range(48))
    ct = sm2.sm4_ecb_encrypt(key, data)
    assert len(ct) == 48 and sm2.sm4_ecb_decrypt(key, ct) == data
    (workdir() / "sm4.in").write_bytes(data)
    ossl = openssl("enc", "-sm4-ecb", "-nopad", "-K", key.hex(), "-in", "sm4.in")
    assert ossl == ct
    with pytest.raises(SM2Error):
        sm2.sm4_ecb_encrypt(key, b"x" * 17)
    with pytest.raises(SM2Error):
        sm2.sm4_ecb_encrypt(b"short", b"x" * 16)


# --- standard vector -----------------------------------------------------------------------------

def test_standard_vector_key_z_e() -> None:
    assert sm2.public_key_of(VEC_D) == VEC_PUB
    assert sm2.z_value(VEC_PUB).hex().upper() == VEC_Z
    assert sm2.message_digest(VEC_PUB, VEC_M).hex().upper() == VEC_E


def test_standard_vector_verifies_on_every_backend(backend: str) -> None:
    e = bytes.fromhex(VEC_E)
    assert sm2.verify_digest(VEC_PUB, e, VEC_R, VEC_S)
    assert sm2.verify(VEC_PUB, VEC_M, sm2.encode_signature(VEC_R, VEC_S))
    assert not sm2.verify(VEC_PUB, b"message digesT", sm2.encode_signature(VEC_R, VEC_S))


def test_standard_vector_reproduced_by_gmssl() -> None:
    sig = gm(VEC_D, VEC_PUB).sign_with_sm3(VEC_M, VEC_K)
    assert (int(sig[:64], 16), int(sig[64:], 16)) == (VEC_R, VEC_S)


# --- sign / verify across backends, gmssl and OpenSSL ---------------------------------------

def test_sign_verify_cross_backends(backend: str) -> None:
    d = sm2.generate_private_key()
    pub = sm2.public_key_of(d)
    sig = sm2.sign(d, b"payload")
    for other in sm2.BACKENDS:
        prev = sm2.use_backend(other)
        try:
            assert sm2.verify(pub, b"payload", sig), other
            assert not sm2.verify(pub, b"payloaD", sig), other
        finally:
            sm2.use_backend(prev)
    # and by the reference arithmetic of the standard (gmssl's own verify breaks now and then)
    assert independent_verify(pub, b"payload", sig, uid=sm2.DEFAULT_ID)


@pytest.mark.skipif(sm2._ossl is None, reason="no usable libcrypto")
def test_libcrypto_signer_cross_checked() -> None:
    d = sm2.generate_private_key()
    pub = sm2.public_key_of(d)
    e = sm2.message_digest(pub, b"libcrypto k*G")
    r, s = sm2._ossl_sign_digest(d, e)
    for other in sm2.BACKENDS:
        prev = sm2.use_backend(other)
        try:
            assert sm2.verify_digest(pub, e, r, s), other
        finally:
            sm2.use_backend(prev)
    assert sm2_reference.verify_digest(pub, e, r, s)  # gmssl's verify fails now and then


def test_gmssl_signature_verifies_here(backend: str) -> None:
    # fixed key and nonce: gmssl's own point arithmetic breaks for some random values
    d = int.from_bytes(hashlib.sha256(b"gmssl interop key").digest(), "big") % (N - 1) + 1
    pub = sm2.public_key_of(d)
    k = f"{int.from_bytes(hashlib.sha256(b'gmssl nonce').digest(), 'big') % (N - 1) + 1:064x}"
    raw = gm(d, pub).sign_with_sm3(b"from gmssl", k)
    sig = sm2.encode_signature(int(raw[:64], 16), int(raw[64:], 16))
    assert sm2.verify(pub, b"from gmssl", sig)


def test_public_key_matches_openssl(backend: str) -> None:
    _key, d, pub = sm2_key()
    spki = openssl("pkey", "-pubin", "-in", "user.pub", "-outform", "DER")
    assert spki[-65:] == pub == sm2.public_key_of(d)
    assert spki.hex().upper().startswith("3059301306072A8648CE3D020106082A811CCF5501822D03420004")


def test_pure_python_fallback_when_forced() -> None:
    code = ("from mailbot.pki import sm2; print(sm2.backend_name()); "
            f"print(sm2.verify(bytes.fromhex('{VEC_PUB.hex()}'), {VEC_M!r}, "
            f"sm2.encode_signature({VEC_R}, {VEC_S})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, cwd=REPO,
                          env={**os.environ, "MAILBOT_SM2_BACKEND": "python"})
    assert proc.stdout.split("\n")[:2] == ["python (sign: python, SM3: hashlib)", "True"]


def test_openssl_signature_verifies_here(backend: str) -> None:
    key, _d, pub = sm2_key()
    (workdir() / "msg.bin").write_bytes(b"signed by openssl")
    openssl("dgst", "-sm3", "-sign", str(key), "-sigopt", STD_ID, "-out", "msg.sig", "msg.bin")
    sig = (workdir() / "msg.sig").read_bytes()
    assert sm2.verify(pub, b"signed by openssl", sig)
    assert not sm2.verify(pub, b"signed by openssl", sig, uid=b"")
    assert not sm2.verify(pub, b"signed by opensst", sig)


def test_openssl_verifies_our_signature(backend: str) -> None:
    key, d, _pub = sm2_key()
    (workdir() / f"ours-{backend}.bin").write_bytes(b"signed here")
    (workdir() / f"ours-{backend}.sig").write_bytes(sm2.sign(d, b"signed here"))
    out = openssl("dgst", "-sm3", "-verify", str(workdir() / "user.pub"), "-sigopt", STD_ID,
                  "-signature", f"ours-{backend}.sig", f"ours-{backend}.bin")
    assert b"Verified OK" in out
    # without the ID OpenSSL 3 uses an empty one and fails: the documented quirk
    proc = subprocess.run(["openssl", "dgst", "-sm3", "-verify", "user.pub", "-signature",
                           f"ours-{backend}.sig", f"ours-{backend}.bin"], cwd=workdir(),
                          capture_output=True, check=False)
    assert proc.returncode != 0


def test_empty_id_signature_verifies_only_with_empty_id(backend: str) -> None:
    d = sm2.generate_private_key()
    pub = sm2.public_key_of(d)
    sig = sm2.sign(d, b"m", uid=b"")
    assert sm2.verify(pub, b"m", sig, uid=b"")
    assert not sm2.verify(pub, b"m", sig)


def test_sign_digest_and_key_ranges(backend: str) -> None:
    for d in (1, 2, N - 2):
        pub = sm2.public_key_of(d)
        e = sm2.message_digest(pub, b"x")
        r, s = sm2.sign_digest(d, e)
        assert sm2.verify_digest(pub, e, r, s)
    for bad in (0, N - 1, N, -1):
        with pytest.raises(SM2Error):
            sm2.sign_digest(bad, b"\x00" * 32)
        with pytest.raises(SM2Error):
            sm2.public_key_of(bad)
    assert all(1 <= sm2.generate_private_key() <= N - 2 for _ in range(20))


# --- negative vectors ----------------------------------------------------------------------

def test_range_checks_on_r_and_s(backend: str) -> None:
    e = bytes.fromhex(VEC_E)
    for r, s in ((0, VEC_S), (VEC_R, 0), (N, VEC_S), (VEC_R, N), (VEC_R + N, VEC_S),
                 (VEC_R, VEC_S + N), (N - VEC_S, VEC_S)):
        assert not sm2.verify_digest(VEC_PUB, e, r, s)
        assert not sm2.verify(VEC_PUB, VEC_M, sm2.encode_signature(r, s))


def test_bad_public_keys_rejected(backend: str) -> None:
    e = bytes.fromhex(VEC_E)
    off_curve = VEC_PUB[:-1] + bytes([VEC_PUB[-1] ^ 1])
    infinity = b"\x04" + b"\x00" * 64
    big = b"\x04" + sm2.P.to_bytes(32, "big") + VEC_PUB[33:]
    for pub, why in ((off_curve, "not on the SM2 curve"), (infinity, "infinity"),
                     (big, ">= p"), (VEC_PUB[1:], "65 bytes"), (b"\x02" + VEC_PUB[1:], "04")):
        with pytest.raises(SM2Error, match=why):
            sm2.check_public_key(pub)
        assert not sm2.verify_digest(pub, e, VEC_R, VEC_S)
        assert not sm2.verify(pub, VEC_M, sm2.encode_signature(VEC_R, VEC_S))
    sm2.check_public_key(VEC_PUB)


def test_wrong_id_and_flipped_bits(backend: str) -> None:
    sig = sm2.encode_signature(VEC_R, VEC_S)
    assert not sm2.verify(VEC_PUB, VEC_M, sig, uid=b"1234567812345679")
    for i in range(len(sig) * 8):
        flipped = bytearray(sig)
        flipped[i // 8] ^= 1 << (i % 8)
        assert not sm2.verify(VEC_PUB, VEC_M, bytes(flipped)), i
    for i in (0, 7, len(VEC_M) * 8 - 1):
        msg = bytearray(VEC_M)
        msg[i // 8] ^= 1 << (i % 8)
        assert not sm2.verify(VEC_PUB, bytes(msg), sig)


STRICT_DER_CASES = {
    "truncated": lambda sig: sig[:-1],
    "trailing garbage": lambda sig: sig + b"\x00",
    "indefinite length": lambda sig: b"\x30\x80" + sig[2:] + b"\x00\x00",
    "non-minimal length": lambda sig: b"\x30\x81" + sig[1:],
    "negative r": lambda sig: der.tlv(0x30, b"\x02\x01\xff" + der.enc_int(VEC_S)),
    "non-minimal r": lambda sig: der.tlv(
        0x30, b"\x02\x21\x00" + (5).to_bytes(32, "big") + der.enc_int(VEC_S)),
    "oversized r": lambda sig: der.tlv(
        0x30, der.enc_int(VEC_R << 16) + der.enc_int(VEC_S)),
    "extra integer": lambda sig: der.tlv(0x30, sig[2:] + b"\x02\x01\x01"),
    "not a sequence": lambda sig: b"\x31" + sig[1:],
    "empty integer": lambda sig: der.tlv(0x30, b"\x02\x00" + der.enc_int(VEC_S)),
    "empty": lambda sig: b"",
}


@pytest.mark.parametrize("case", sorted(STRICT_DER_CASES))
def test_strict_der(case: str) -> None:
    sig = sm2.encode_signature(VEC_R, VEC_S)
    bad = STRICT_DER_CASES[case](sig)
    with pytest.raises(SM2Error):
        sm2.decode_signature(bad)
    assert not sm2.verify(VEC_PUB, VEC_M, bad)


def test_encode_decode_roundtrip() -> None:
    for r, s in ((1, 1), (127, 128), (VEC_R, VEC_S), (N - 1, 0x80 << 240)):
        assert sm2.decode_signature(sm2.encode_signature(r, s)) == (r, s)
    assert sm2.encode_signature(1, 128) == bytes.fromhex("3007020101020200 80".replace(" ", ""))


# --- encryption ----------------------------------------------------------------------------

def test_encrypt_decrypt_roundtrip_and_wrong_key() -> None:
    d = sm2.generate_private_key()
    pub = sm2.public_key_of(d)
    for msg in (b"k", b"\x00" * 16, bytes(range(256)) * 3):
        ct = sm2.encrypt(pub, msg)
        assert sm2.decrypt(d, ct) == msg
        x1, y1, c3, c2 = sm2.decode_cipher(ct)
        assert len(c3) == 32 and len(c2) == len(msg)
    ct = sm2.encrypt(pub, b"secret")
    with pytest.raises(SM2Error, match="key does not fit"):
        sm2.decrypt(sm2.generate_private_key(), ct)
    corrupted = bytearray(ct)
    corrupted[-1] ^= 1
    with pytest.raises(SM2Error, match="key does not fit"):
        sm2.decrypt(d, bytes(corrupted))
    for junk in (b"", ct + b"\x00", ct[:-1], b"\x30\x03\x02\x01\x01"):
        with pytest.raises(SM2Error):
            sm2.decrypt(d, junk)
    with pytest.raises(SM2Error):
        sm2.encrypt(b"\x04" + b"\x00" * 64, b"x")


def test_openssl_ciphertext_decrypts_here() -> None:
    key, d, _pub = sm2_key()
    (workdir() / "plain.txt").write_bytes(b"sixteen byte key")
    ct = openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", "user.pub", "-in", "plain.txt")
    assert sm2.decrypt(d, ct) == b"sixteen byte key"


def test_our_ciphertext_decrypts_in_openssl_gmssl_pyx_and_gmssl() -> None:
    key, d, pub = sm2_key()
    ct = sm2.encrypt(pub, b"envelope key 123")
    (workdir() / "ours.ct").write_bytes(ct)
    assert openssl("pkeyutl", "-decrypt", "-inkey", str(key), "-in", "ours.ct") == (
        b"envelope key 123")
    gmssl_pyx = pytest.importorskip("gmssl_pyx")
    assert gmssl_pyx.sm2_decrypt(d.to_bytes(32, "big"), ct) == b"envelope key 123"
    x1, y1, c3, c2 = sm2.decode_cipher(ct)
    raw = x1.to_bytes(32, "big") + y1.to_bytes(32, "big") + c3 + c2  # gmssl: C1 without 04
    assert gm(d, pub, mode=1).decrypt(raw) == b"envelope key 123"


def test_backend_name() -> None:
    assert sm2.backend_name().split()[0] in sm2.BACKENDS
    with pytest.raises(SM2Error):
        sm2.use_backend("nonexistent")


# --- property: malformed input only ever gives SM2Error / False ------------------------------

@given(st.binary(max_size=120))
def test_decoders_only_raise_sm2error(data: bytes) -> None:
    for fn in (sm2.decode_signature, sm2.decode_cipher, lambda b: sm2.decrypt(VEC_D, b)):
        try:
            fn(data)
        except SM2Error:
            pass
    assert sm2.verify(VEC_PUB, VEC_M, data) is False or data == sm2.encode_signature(VEC_R, VEC_S)


@given(st.binary(min_size=65, max_size=65))
def test_arbitrary_public_keys_never_crash(pub: bytes) -> None:
    assert sm2.verify(pub, VEC_M, sm2.encode_signature(VEC_R, VEC_S)) in (True, False)
