"""The envelope's SM2 encryption and SM4 run in libcrypto; checked by independent routes.

* ours -> OpenSSL CLI: `openssl pkeyutl -decrypt` with the applicant's OpenSSL key gives the
  SM4 key, `openssl enc -d -sm4-ecb -nopad` gives d, and OpenSSL derives d's public key, which
  is the envelope's Sm2PublicKey (reference §3, §4, §7);
* OpenSSL CLI -> ours: an SM2Cipher from `openssl pkeyutl -encrypt`, and a whole envelope made
  with the CLI, open here;
* the GM/T 0009 SM2Cipher field order (x, y, C3, C2) and its meaning, recomputed with the
  reference arithmetic of tests/support/sm2_reference.py and hashlib's SM3;
* the pure-Python reference (sm2.reference_*) and libcrypto decrypt each other's output;
* production paths never touch the pure-Python code; no SM2 in libcrypto is one clear error.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from asn1crypto import core
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.pki import envelope, sm2
from mailbot.pki.errors import PkiError
from tests.support import sm2_reference
from tests.support.pki_issue import SM2EnvelopedKey, openssl

SM2_CURVE_SEC1_TAIL = bytes.fromhex("A00A06082A811CCF5501822D")  # [0] namedCurve sm2


def _openssl_key(folder: Path, name: str = "sign") -> tuple[Path, Path, int]:
    """(key.pem, pub.pem, d) of an SM2 key made by `openssl genpkey`; d read by OpenSSL."""
    openssl("genpkey", "-algorithm", "SM2", "-out", f"{name}.pem", cwd=folder)
    openssl("pkey", "-in", f"{name}.pem", "-pubout", "-out", f"{name}.pub", cwd=folder)
    text = openssl("pkey", "-in", f"{name}.pem", "-noout", "-text", cwd=folder).stdout.decode()
    hex_lines = text.split("priv:")[1].split("pub:")[0]
    d = int("".join(hex_lines.split()).replace(":", ""), 16)
    return folder / f"{name}.pem", folder / f"{name}.pub", d


def _openssl_public_key(d: int, folder: Path) -> bytes:
    """d*G by OpenSSL: a hand-written SEC1 DER through `openssl pkey -pubout`."""
    sec1 = bytes.fromhex("30310201010420") + d.to_bytes(32, "big") + SM2_CURVE_SEC1_TAIL
    (folder / "d.der").write_bytes(sec1)
    spki = openssl("pkey", "-inform", "DER", "-in", "d.der", "-pubout", "-outform", "DER",
                   cwd=folder).stdout
    (folder / "d.der").unlink()
    return spki[-65:]


# SM2Cipher as tests/support writes it down from GM/T 0009 (x, y, hash C3, ciphertext C2)
_Cipher = SM2EnvelopedKey._fields[1][1]


def _kdf(z: bytes, klen: int) -> bytes:
    out = b"".join(hashlib.new("sm3", z + i.to_bytes(4, "big")).digest()
                   for i in range(1, klen // 32 + 2))
    return out[:klen]


def _independent_decrypt(d: int, ct: bytes) -> bytes:
    """GB/T 32918.4 decryption, C1C3C2 read as GM/T 0009 (reference §3): neither ours nor OpenSSL."""
    c = _Cipher.load(ct, strict=True)
    pt = sm2_reference.multiply(d, (c["x"].native, c["y"].native))
    assert pt is not None
    x2, y2 = pt[0].to_bytes(32, "big"), pt[1].to_bytes(32, "big")
    c2 = c["ciphertext"].native
    m = bytes(a ^ b for a, b in zip(c2, _kdf(x2 + y2, len(c2)), strict=True))
    assert hashlib.new("sm3", x2 + m + y2).digest() == c["hash"].native, "C3 mismatch"
    return m


# --- ours -> OpenSSL -----------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_envelope_opens_with_openssl_cli(tmp_path: Path) -> None:
    key, _pub, sign_d = _openssl_key(tmp_path)
    enc_d = sm2.generate_private_key()
    data = envelope.make_envelope(sm2.public_key_of(sign_d), enc_d)
    env = SM2EnvelopedKey.load(data, strict=True)
    (tmp_path / "c.der").write_bytes(env["sym_encrypted_key"].dump())
    # SM2 decryption needs no distid (that is for signatures only)
    sym = openssl("pkeyutl", "-decrypt", "-inkey", str(key), "-in", "c.der", cwd=tmp_path).stdout
    assert len(sym) == 16
    (tmp_path / "p.bin").write_bytes(env["sm2_encrypted_private_key"].native)
    plain = openssl("enc", "-d", "-sm4-ecb", "-nopad", "-K", sym.hex(), "-in", "p.bin",
                    cwd=tmp_path).stdout
    assert len(plain) == 32
    d = int.from_bytes(plain, "big")
    assert d == enc_d
    assert _openssl_public_key(d, tmp_path) == env["sm2_public_key"].native
    assert sm2_reference.public_key(d) == env["sm2_public_key"].native


def test_sm2cipher_is_gmt0009_c1c3c2(tmp_path: Path) -> None:
    """x, y INTEGER; C3 = SM3(x2||M||y2) OCTET STRING(32); C2 = M xor KDF OCTET STRING."""
    d = sm2.generate_private_key()
    msg = b"sixteen byte key"
    ct = sm2.encrypt(sm2.public_key_of(d), msg)
    assert _independent_decrypt(d, ct) == msg
    (tmp_path / "ct").write_bytes(ct)
    parsed = openssl("asn1parse", "-inform", "DER", "-in", "ct", cwd=tmp_path).stdout.decode()
    fields = re.findall(r"d=1 +hl=\d+ +l= *(\d+) prim: (INTEGER|OCTET STRING)", parsed)
    assert [kind for _n, kind in fields] == ["INTEGER", "INTEGER", "OCTET STRING", "OCTET STRING"]
    assert [int(n) for n, _k in fields[2:]] == [32, len(msg)]  # C3, then C2


def test_our_ciphertext_decrypts_with_openssl_cli(tmp_path: Path) -> None:
    key, _pub, sign_d = _openssl_key(tmp_path)
    msg = bytes(range(1, 100))
    (tmp_path / "ours.ct").write_bytes(sm2.encrypt(sm2.public_key_of(sign_d), msg))
    assert openssl("pkeyutl", "-decrypt", "-inkey", str(key), "-in", "ours.ct",
                   cwd=tmp_path).stdout == msg


# --- OpenSSL -> ours -----------------------------------------------------------------------------

def test_openssl_cli_ciphertext_decrypts_here(tmp_path: Path) -> None:
    _key, pub, d = _openssl_key(tmp_path)
    for msg in (b"k", b"sixteen byte key", bytes(range(256)) * 2):
        (tmp_path / "m").write_bytes(msg)
        ct = openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", str(pub), "-in", "m",
                     cwd=tmp_path).stdout
        assert sm2.decrypt(d, ct) == msg
        assert sm2.reference_decrypt(d, ct) == msg
        assert _independent_decrypt(d, ct) == msg
    with pytest.raises(sm2.SM2Error, match="does not fit"):
        sm2.decrypt(sm2.generate_private_key(), ct)


@pytest.mark.timeout(120)
def test_envelope_made_by_openssl_cli_opens_here(tmp_path: Path) -> None:
    """GM/T 0009 put together from `pkeyutl -encrypt` + `enc -sm4-ecb` output opens here."""
    _key, pub, sign_d = _openssl_key(tmp_path)
    enc_d = sm2.generate_private_key()
    sym = bytes.fromhex("00112233445566778899aabbccddeeff")
    (tmp_path / "sym").write_bytes(sym)
    wrapped = openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", str(pub), "-in", "sym",
                      cwd=tmp_path).stdout
    (tmp_path / "d").write_bytes(enc_d.to_bytes(32, "big"))
    enc_priv = openssl("enc", "-sm4-ecb", "-nopad", "-K", sym.hex(), "-in", "d",
                       cwd=tmp_path).stdout
    env = SM2EnvelopedKey({
        "sym_alg": {"algorithm": "1.2.156.10197.1.104.1", "parameters": core.Null()},
        "sym_encrypted_key": _Cipher.load(wrapped),
        "sm2_public_key": _openssl_public_key(enc_d, tmp_path),
        "sm2_encrypted_private_key": enc_priv,
    })
    assert envelope.open_envelope(sign_d, env.dump()) == enc_d


# --- reference cross-checks ----------------------------------------------------------------------

_D = sm2.generate_private_key()
_PUB = sm2.public_key_of(_D)


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_libcrypto_and_reference_agree(msg: bytes) -> None:
    assert sm2.reference_decrypt(_D, sm2.encrypt(_PUB, msg)) == msg
    assert sm2.decrypt(_D, sm2.reference_encrypt(_PUB, msg)) == msg


def test_sm4_against_openssl_cli(tmp_path: Path) -> None:
    key = bytes(range(16))
    data = bytes(range(64))
    (tmp_path / "in").write_bytes(data)
    ct = openssl("enc", "-sm4-ecb", "-nopad", "-K", key.hex(), "-in", "in", cwd=tmp_path).stdout
    assert sm2.sm4_ecb_encrypt(key, data) == ct
    assert sm2.sm4_ecb_decrypt(key, ct) == data


# --- production goes through libcrypto, or fails clearly -----------------------------------------

def test_production_paths_use_libcrypto_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("pure-Python SM2 encryption / point code used")

    for name in ("reference_encrypt", "reference_decrypt", "_kdf", "_mul", "_mul_g"):
        monkeypatch.setattr(sm2, name, forbidden)
    evp = sm2._evp()
    calls: list[str] = []
    for name in ("encrypt", "decrypt", "sm4_ecb"):
        real = getattr(evp, name)
        monkeypatch.setattr(evp, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    prev = sm2.use_backend("openssl")  # public_key_of: libcrypto too
    try:
        sign_d, enc_d = sm2.generate_private_key(), sm2.generate_private_key()
        data = envelope.make_envelope(sm2.public_key_of(sign_d), enc_d)
        assert envelope.open_envelope(sign_d, data) == enc_d
    finally:
        sm2.use_backend(prev)
    assert calls == ["encrypt", "sm4_ecb", "decrypt", "sm4_ecb"]
    assert sm2.encryption_backend() == "openssl"


def _no_sm4(self: object) -> None:
    raise AttributeError("libcrypto.so: undefined symbol: EVP_sm4_ecb")  # as ctypes says


@pytest.mark.parametrize("broken", [
    ("__init__", _no_sm4),  # OpenSSL < 1.1.1: no SM4 symbols
    ("_public", lambda self, pub: None),  # built without SM2: the key does not load
    ("_run", lambda self, pkey, encrypting, data: None),  # SM2 EVP encryption refused
])
def test_no_sm2_in_libcrypto_is_one_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                broken: tuple) -> None:
    monkeypatch.setattr(sm2, "_EVP", None)
    monkeypatch.setattr(sm2, "_EVP_ERROR", "")
    monkeypatch.setattr(sm2._Evp, *broken)
    sign_d = sm2.generate_private_key()
    with pytest.raises(sm2.SM2Unavailable) as info:
        envelope.make_envelope(sm2.public_key_of(sign_d), sm2.generate_private_key())
    msg = str(info.value)
    assert isinstance(info.value, PkiError) and "\n" not in msg
    assert "needs OpenSSL's libcrypto 1.1.1 or later with SM2 and SM4" in msg
    assert "OpenSSL" in msg.split("(", 1)[1]  # names the libcrypto it found
    with pytest.raises(envelope.EnvelopeError, match="needs OpenSSL's libcrypto"):
        envelope.open_envelope(sign_d, _valid_envelope(sign_d))
    with pytest.raises(sm2.SM2Unavailable):
        sm2.sm4_ecb_encrypt(bytes(16), bytes(16))


def _valid_envelope(sign_d: int) -> bytes:
    """An envelope built without libcrypto (reference SM2, OpenSSL CLI for SM4)."""
    sym = bytes(range(16))
    enc_d = 0x1234
    enc_priv = subprocess.run(["openssl", "enc", "-sm4-ecb", "-nopad", "-K", sym.hex()],
                              input=enc_d.to_bytes(32, "big"), capture_output=True,
                              check=True, timeout=60).stdout
    return SM2EnvelopedKey({
        "sym_alg": {"algorithm": "1.2.156.10197.1.104.1", "parameters": core.Null()},
        "sym_encrypted_key": _Cipher.load(sm2.reference_encrypt(sm2.public_key_of(sign_d), sym)),
        "sm2_public_key": sm2_reference.public_key(enc_d),
        "sm2_encrypted_private_key": enc_priv,
    }).dump()
