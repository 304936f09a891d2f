"""Strict SM2 / SM3 / SM4 (GB/T 32918, GB/T 32905, GB/T 32907) in front of a fast backend.

Every check the standard asks for (r, s in [1, n-1], the public key on the curve and not the
point at infinity, strict DER) is done here in Python before a backend sees the data.
Backends for the scalar work of sign/verify, in order of preference:
  "openssl"   - OpenSSL libcrypto's EC_POINT_mul through ctypes (as fast as `openssl speed`,
                quiet: errors stay on OpenSSL's error queue);
  "gmssl-pyx" - GmSSL in C (correct, but prints trace lines to stderr on every failed verify);
  "python"    - pure-Python Jacobian arithmetic in this module (fallback).
MAILBOT_SM2_BACKEND forces one. SM3 comes from hashlib (OpenSSL) when it offers "sm3", else
from the `gmssl` package.
SM2 encryption / decryption and SM4-ECB (the envelope, GM/T 0009) always go through libcrypto's
EVP (EVP_PKEY_encrypt/decrypt with an SM2 key, EVP sm4-ecb): constant-time scalar code for k and
d, C3 checked by OpenSSL with CRYPTO_memcmp, the ciphertext strictly decoded here first. There
is no fallback: without an SM2-capable libcrypto they raise SM2Unavailable. The pure-Python
`reference_encrypt` / `reference_decrypt` stay only for tests and bench/envelope.py.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from mailbot.pki.der import tlv
from mailbot.pki.errors import PkiError

DEFAULT_ID = b"1234567812345678"

# sm2p256v1 (GB/T 32918.5-2017)
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

_CURVE_BYTES = b"".join(v.to_bytes(32, "big") for v in (A, B, GX, GY))


class SM2Error(PkiError, ValueError):
    """Malformed or unusable SM2 input (key, signature, ciphertext)."""


class SM2Unavailable(SM2Error):
    """This libcrypto cannot do SM2 encryption or SM4 (missing, too old, built without)."""


# ---------------------------------------------------------------------------------------------
# SM3

if "sm3" in hashlib.algorithms_available:
    def sm3(data: bytes) -> bytes:
        """SM3 digest (32 bytes), computed by OpenSSL through hashlib."""
        return hashlib.new("sm3", data).digest()
    _SM3_NAME = "hashlib"
else:  # pragma: no cover - only on builds whose OpenSSL lacks SM3
    from gmssl import sm3 as _gm_sm3

    def sm3(data: bytes) -> bytes:
        """SM3 digest (32 bytes), computed by the pure-Python gmssl package."""
        return bytes.fromhex(_gm_sm3.sm3_hash(list(data)))
    _SM3_NAME = "gmssl"


# ---------------------------------------------------------------------------------------------
# Strict DER for SM2Signature and SM2Cipher

def _der_int(v: int) -> bytes:
    if v < 0:
        raise SM2Error("negative integer")
    raw = v.to_bytes(v.bit_length() // 8 + 1, "big")  # leading 00 only when the top bit is set
    if len(raw) > 1 and raw[0] == 0 and raw[1] < 0x80:
        raw = raw[1:]
    return tlv(0x02, raw)


def _read_tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Read one strict-DER TLV at pos; return (tag, content_start, content_end)."""
    if pos + 2 > end:
        raise SM2Error("truncated DER")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise SM2Error("unexpected high tag number")
    first = buf[pos + 1]
    pos += 2
    if first == 0x80:
        raise SM2Error("indefinite length is not DER")
    if first & 0x80:
        count = first & 0x7F
        if count > 4 or pos + count > end:
            raise SM2Error("bad DER length")
        length = int.from_bytes(buf[pos:pos + count], "big")
        if buf[pos] == 0 or length < 0x80:
            raise SM2Error("non-minimal DER length")
        pos += count
    else:
        length = first
    if pos + length > end:
        raise SM2Error("truncated DER")
    return tag, pos, pos + length


def _read_uint(buf: bytes, pos: int, end: int, max_bytes: int = 33,
               unsigned_32: bool = False) -> tuple[int, int]:
    tag, start, stop = _read_tlv(buf, pos, end)
    if tag != 0x02:
        raise SM2Error("expected INTEGER")
    body = buf[start:stop]
    if not body:
        raise SM2Error("empty INTEGER")
    if body[0] & 0x80:
        if unsigned_32 and len(body) == 32:  # a device left out the leading 00
            return int.from_bytes(body, "big"), stop
        raise SM2Error("negative INTEGER")
    if len(body) > 1 and body[0] == 0 and body[1] < 0x80:
        raise SM2Error("non-minimal INTEGER")
    if len(body) > max_bytes:
        raise SM2Error("oversized INTEGER")
    return int.from_bytes(body, "big"), stop


def encode_signature(r: int, s: int) -> bytes:
    """DER SM2Signature ::= SEQUENCE { r INTEGER, s INTEGER } with minimal integers."""
    return tlv(0x30, _der_int(r) + _der_int(s))


def decode_signature(der: bytes, *, unsigned_32: bool = False) -> tuple[int, int]:
    """Strict DER decode of SM2Signature; raises SM2Error on any deviation.

    Rejects: trailing bytes, indefinite or non-minimal lengths, negative, non-minimal or
    oversized (> 33 content bytes) integers. Range checks on r, s are in verify_digest.
    `unsigned_32` reads a 32-byte INTEGER with its top bit set as the unsigned value a device
    meant when it left out the leading 00 (strict DER reads it as negative); nothing else bends.
    """
    der = bytes(der)
    tag, start, stop = _read_tlv(der, 0, len(der))
    if tag != 0x30:
        raise SM2Error("signature is not a DER SEQUENCE")
    if stop != len(der):
        raise SM2Error("trailing bytes after signature")
    r, pos = _read_uint(der, start, stop, unsigned_32=unsigned_32)
    s, pos = _read_uint(der, pos, stop, unsigned_32=unsigned_32)
    if pos != stop:
        raise SM2Error("extra data inside signature SEQUENCE")
    return r, s


# ---------------------------------------------------------------------------------------------
# Curve arithmetic (Jacobian coordinates, a = -3): the fallback backend and key derivation

_INF = (1, 1, 0)


def _jdouble(pt: tuple[int, int, int]) -> tuple[int, int, int]:
    x1, y1, z1 = pt
    if z1 == 0 or y1 == 0:
        return _INF
    delta = z1 * z1 % P
    gamma = y1 * y1 % P
    beta = x1 * gamma % P
    alpha = 3 * (x1 - delta) * (x1 + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y1 + z1) ** 2 - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return x3, y3, z3


def _jadd(p1: tuple[int, int, int], p2: tuple[int, int, int]) -> tuple[int, int, int]:
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if z1 == 0:
        return p2
    if z2 == 0:
        return p1
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - u1) % P
    r = (s2 - s1) % P
    if h == 0:
        return _jdouble(p1) if r == 0 else _INF
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - s1 * hhh) % P
    z3 = h * z1 * z2 % P
    return x3, y3, z3


def _jmadd(p1: tuple[int, int, int], x2: int, y2: int) -> tuple[int, int, int]:
    """Jacobian + affine point."""
    x1, y1, z1 = p1
    if z1 == 0:
        return x2, y2, 1
    z1z1 = z1 * z1 % P
    u2 = x2 * z1z1 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - x1) % P
    r = (s2 - y1) % P
    if h == 0:
        return _jdouble(p1) if r == 0 else _INF
    hh = h * h % P
    hhh = h * hh % P
    v = x1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - y1 * hhh) % P
    return x3, y3, z1 * h % P


def _to_affine(pt: tuple[int, int, int]) -> tuple[int, int] | None:
    x, y, z = pt
    if z == 0:
        return None
    zi = pow(z, -1, P)
    zi2 = zi * zi % P
    return x * zi2 % P, y * zi2 * zi % P


_G_TABLE: list[list[tuple[int, int]]] = []


def _g_table() -> list[list[tuple[int, int]]]:
    """Fixed-base table: _G_TABLE[i][j-1] = j * 16**i * G (affine), built once on first use."""
    if not _G_TABLE:
        base = (GX, GY, 1)
        for _ in range(64):
            row = [base]
            for _j in range(14):
                row.append(_jadd(row[-1], base))
            _G_TABLE.append([_to_affine(p) for p in row])  # type: ignore[misc]
            for _k in range(4):
                base = _jdouble(base)
    return _G_TABLE


def _mul_g(k: int) -> tuple[int, int, int]:
    table = _g_table()
    acc = _INF
    i = 0
    while k:
        nib = k & 15
        if nib:
            x, y = table[i][nib - 1]
            acc = _jmadd(acc, x, y)
        k >>= 4
        i += 1
    return acc


def _mul(k: int, x: int, y: int) -> tuple[int, int, int]:
    """k * (x, y) for an arbitrary affine point: 4-bit fixed window."""
    base = (x, y, 1)
    row = [_INF, base]
    for _ in range(14):
        row.append(_jadd(row[-1], base))
    acc = _INF
    for shift in range((k.bit_length() + 3) // 4 * 4 - 4, -4, -4):
        acc = _jdouble(_jdouble(_jdouble(_jdouble(acc))))
        nib = (k >> shift) & 15
        if nib:
            acc = _jadd(acc, row[nib])
    return acc


def _on_curve(x: int, y: int) -> bool:
    return x < P and y < P and (y * y - x * x * x - A * x - B) % P == 0


# ---------------------------------------------------------------------------------------------
# Keys

def generate_private_key() -> int:
    """A fresh private key d in [1, n-2] from `secrets`."""
    return secrets.randbelow(N - 2) + 1


def _check_private_key(d: int) -> None:
    if not isinstance(d, int) or not 1 <= d <= N - 2:
        raise SM2Error("SM2 private key out of range [1, n-2]")


def public_key_of(d: int) -> bytes:
    """The public key 04||X||Y (65 bytes) of private key d."""
    _check_private_key(d)
    # libcrypto's scalar-only multiply is faster and constant-time; Python otherwise
    aff = _ossl.mul(d) if _ossl is not None and _active == "openssl" else _to_affine(_mul_g(d))
    if aff is None:
        raise SM2Error("cannot compute the public key")
    return b"\x04" + aff[0].to_bytes(32, "big") + aff[1].to_bytes(32, "big")


def _point(pub: bytes) -> tuple[int, int]:
    check_public_key(pub)
    return int.from_bytes(pub[1:33], "big"), int.from_bytes(pub[33:65], "big")


def check_public_key(pub: bytes) -> None:
    """Raise SM2Error unless pub is an uncompressed point 04||X||Y on the SM2 curve.

    The point at infinity has no affine encoding; its common stand-ins (all-zero X, Y) are not
    on the curve (b != 0), so they fail here too. The cofactor is 1: on the curve means in the
    group of order n.
    """
    if not isinstance(pub, (bytes, bytearray)) or len(pub) != 65:
        raise SM2Error("SM2 public key must be 65 bytes 04||X||Y")
    if pub[0] != 4:
        raise SM2Error("SM2 public key is not an uncompressed point (first byte != 04)")
    x = int.from_bytes(pub[1:33], "big")
    y = int.from_bytes(pub[33:65], "big")
    if x == 0 and y == 0:
        raise SM2Error("SM2 public key is the point at infinity")
    if x >= P or y >= P:
        raise SM2Error("SM2 public key coordinate >= p")
    if not _on_curve(x, y):
        raise SM2Error("SM2 public key is not on the SM2 curve")


def z_value(pub: bytes, uid: bytes = DEFAULT_ID) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA)."""
    if len(uid) >= 8192:
        raise SM2Error("SM2 ID longer than 8191 bytes")
    if len(pub) != 65:
        raise SM2Error("SM2 public key must be 65 bytes 04||X||Y")
    entl = (len(uid) * 8).to_bytes(2, "big")
    return sm3(entl + bytes(uid) + _CURVE_BYTES + bytes(pub[1:]))


def message_digest(pub: bytes, message: bytes, uid: bytes = DEFAULT_ID) -> bytes:
    """e = SM3(Z || M)."""
    return sm3(z_value(pub, uid) + bytes(message))


# ---------------------------------------------------------------------------------------------
# Backends: sign/verify on the digest e, after all checks

def _py_sign_digest(d: int, e: bytes) -> tuple[int, int]:
    ei = int.from_bytes(e, "big")
    dinv = pow(1 + d, -1, N)
    while True:
        k = secrets.randbelow(N - 1) + 1
        x1 = _to_affine(_mul_g(k))[0]  # type: ignore[index]
        r = (ei + x1) % N
        if r == 0 or r + k == N:
            continue
        s = dinv * (k - r * d) % N
        if s:
            return r, s


def _py_verify_digest(pub: bytes, e: bytes, r: int, s: int) -> bool:
    x, y = _point(pub)
    t = (r + s) % N
    if t == 0:
        return False
    aff = _to_affine(_jadd(_mul_g(s), _mul(t, x, y)))
    if aff is None:
        return False
    return (int.from_bytes(e, "big") + aff[0]) % N == r


_FORCED = os.environ.get("MAILBOT_SM2_BACKEND", "")  # "python" / "gmssl-pyx" / "openssl"

try:
    import gmssl_pyx as _pyx
except ImportError:  # pragma: no cover - gmssl-pyx is a declared dependency
    _pyx = None


def _pyx_sign_digest(d: int, e: bytes) -> tuple[int, int]:
    return decode_signature(_pyx.sm2_sign_sm3_digest(d.to_bytes(32, "big"), e))


def _pyx_verify_digest(pub: bytes, e: bytes, r: int, s: int) -> bool:
    # GmSSL writes two trace lines to stderr on every failed verify; hence not the default
    try:
        return bool(_pyx.sm2_verify_sm3_digest(bytes(pub[1:]), e, encode_signature(r, s)))
    except _pyx.GmsslInnerError:
        return False


class _LibCrypto:
    """The EC primitives of OpenSSL's libcrypto via ctypes: s*G + t*P in C, the rest here.

    Used for the one scalar operation of a verify (and k*G of a sign); all SM2 logic and checks
    stay in this module. OpenSSL puts errors on its error queue, never on stderr.
    """

    NID_SM2 = 1172

    def __init__(self) -> None:
        import ctypes
        import ctypes.util

        path = ctypes.util.find_library("crypto")
        if not path:
            raise OSError("libcrypto not found")
        lib = ctypes.CDLL(path)
        vp, ci, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        for name, res, args in (
            ("EC_GROUP_new_by_curve_name", vp, [ci]),
            ("BN_CTX_new", vp, []), ("BN_CTX_free", None, [vp]),
            ("BN_new", vp, []), ("BN_clear_free", None, [vp]),
            ("BN_bin2bn", vp, [cp, ci, vp]), ("BN_bn2binpad", ci, [vp, vp, ci]),
            ("EC_POINT_new", vp, [vp]), ("EC_POINT_free", None, [vp]),
            ("EC_POINT_oct2point", ci, [vp, vp, cp, ctypes.c_size_t, vp]),
            ("EC_POINT_mul", ci, [vp, vp, vp, vp, vp, vp]),
            ("EC_POINT_get_affine_coordinates", ci, [vp, vp, vp, vp, vp]),
            ("ERR_clear_error", None, []),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        self.lib = lib
        self.buf = ctypes.create_string_buffer
        self.ctypes = ctypes
        self.group = lib.EC_GROUP_new_by_curve_name(self.NID_SM2)
        if not self.group:
            raise OSError("libcrypto has no SM2 curve")

    def mul(self, s: int, pub: bytes | None = None, t: int = 0) -> tuple[int, int] | None:
        """Affine s*G (+ t*pub), or None for infinity / failure."""
        lib = self.lib
        ctx = lib.BN_CTX_new()
        res = lib.EC_POINT_new(self.group)
        pt = lib.EC_POINT_new(self.group) if pub is not None else None
        bs = lib.BN_bin2bn(s.to_bytes(32, "big"), 32, None)
        bt = lib.BN_bin2bn(t.to_bytes(32, "big"), 32, None) if pub is not None else None
        x, y = lib.BN_new(), lib.BN_new()
        try:
            if not (ctx and res and bs and x and y) or (pub is not None and not (pt and bt)):
                raise MemoryError("libcrypto allocation failed")
            if pub is not None and lib.EC_POINT_oct2point(self.group, pt, pub, 65, ctx) != 1:
                return None
            if lib.EC_POINT_mul(self.group, res, bs, pt, bt, ctx) != 1:
                return None
            if lib.EC_POINT_get_affine_coordinates(self.group, res, x, y, ctx) != 1:
                return None  # infinity
            out = self.buf(64)
            lib.BN_bn2binpad(x, out, 32)
            lib.BN_bn2binpad(y, self.ctypes.byref(out, 32), 32)
            return int.from_bytes(out.raw[:32], "big"), int.from_bytes(out.raw[32:], "big")
        finally:
            lib.ERR_clear_error()
            for bn in (bs, bt, x, y):
                if bn:
                    lib.BN_clear_free(bn)
            for p in (pt, res):
                if p:
                    lib.EC_POINT_free(p)
            lib.BN_CTX_free(ctx)


try:
    _ossl: _LibCrypto | None = _LibCrypto()
except (OSError, AttributeError):  # pragma: no cover - no usable libcrypto
    _ossl = None


def _ossl_sign_digest(d: int, e: bytes) -> tuple[int, int]:
    ei = int.from_bytes(e, "big")
    dinv = pow(1 + d, -1, N)
    while True:
        k = secrets.randbelow(N - 1) + 1
        pt = _ossl.mul(k)  # type: ignore[union-attr]
        if pt is None:
            raise SM2Error("libcrypto failed to compute k*G")
        r = (ei + pt[0]) % N
        if r == 0 or r + k == N:
            continue
        s = dinv * (k - r * d) % N
        if s:
            return r, s


def _ossl_verify_digest(pub: bytes, e: bytes, r: int, s: int) -> bool:
    pt = _ossl.mul(s, pub, (r + s) % N)  # type: ignore[union-attr]
    return pt is not None and (int.from_bytes(e, "big") + pt[0]) % N == r


BACKENDS: dict[str, tuple] = {"python": (_py_sign_digest, _py_verify_digest)}
if _pyx is not None:
    BACKENDS["gmssl-pyx"] = (_pyx_sign_digest, _pyx_verify_digest)
if _ossl is not None:
    # Signing stays in GmSSL when present: k is drawn and used inside C, never a Python int.
    BACKENDS["openssl"] = (_pyx_sign_digest if _pyx is not None else _ossl_sign_digest,
                           _ossl_verify_digest)
_active = next(b for b in (_FORCED, "openssl", "gmssl-pyx", "python") if b in BACKENDS)


def backend_name() -> str:
    """Which backend signs and verifies, and where SM3 comes from."""
    signer = BACKENDS[_active][0]
    sign_by = {_pyx_sign_digest: "gmssl-pyx", _ossl_sign_digest: "openssl",
               _py_sign_digest: "python"}[signer]
    return f"{_active} (sign: {sign_by}, SM3: {_SM3_NAME})"


def use_backend(name: str) -> str:
    """Switch the backend ("openssl", "gmssl-pyx", "python"); returns the previous one.

    For cross-tests and the benchmark; production keeps the default.
    """
    global _active
    if name not in BACKENDS:
        raise SM2Error(f"SM2 backend {name!r} not available")
    previous, _active = _active, name
    return previous


# ---------------------------------------------------------------------------------------------
# Signatures

def sign_digest(d: int, e: bytes) -> tuple[int, int]:
    """Raw (r, s) over a 32-byte digest e = SM3(Z||M)."""
    _check_private_key(d)
    if len(e) != 32:
        raise SM2Error("SM2 digest must be 32 bytes")
    return BACKENDS[_active][0](d, bytes(e))


def sign(d: int, message: bytes, uid: bytes = DEFAULT_ID) -> bytes:
    """DER SM2Signature over message with the signer's Z (ID uid)."""
    e = message_digest(public_key_of(d), message, uid)
    return encode_signature(*sign_digest(d, e))


def verify_digest(pub: bytes, e: bytes, r: int, s: int) -> bool:
    """Verify (r, s) over digest e; False for out-of-range r/s or an invalid public key."""
    if not (1 <= r < N and 1 <= s < N) or len(e) != 32:
        return False
    try:
        check_public_key(pub)
    except SM2Error:
        return False
    if (r + s) % N == 0:
        return False
    return BACKENDS[_active][1](bytes(pub), bytes(e), r, s)


def verify(pub: bytes, message: bytes, signature_der: bytes, uid: bytes = DEFAULT_ID) -> bool:
    """Verify a DER SM2Signature; False (never an exception) for malformed DER or a bad key."""
    try:
        r, s = decode_signature(signature_der)
        check_public_key(pub)
    except SM2Error:
        return False
    if not (1 <= r < N and 1 <= s < N):
        return False
    return verify_digest(pub, message_digest(pub, message, uid), r, s)


# ---------------------------------------------------------------------------------------------
# Encryption (GB/T 32918.4, C1C3C2 semantics, GM/T 0009 SM2Cipher DER)

def decode_cipher(der: bytes) -> tuple[int, int, bytes, bytes]:
    """Strict DER decode of SM2Cipher -> (x1, y1, C3, C2); raises SM2Error."""
    der = bytes(der)
    tag, start, stop = _read_tlv(der, 0, len(der))
    if tag != 0x30 or stop != len(der):
        raise SM2Error("SM2Cipher is not a single DER SEQUENCE")
    x1, pos = _read_uint(der, start, stop)
    y1, pos = _read_uint(der, pos, stop)
    tag, c3s, c3e = _read_tlv(der, pos, stop)
    if tag != 0x04 or c3e - c3s != 32:
        raise SM2Error("SM2Cipher HASH must be a 32-byte OCTET STRING")
    tag, c2s, c2e = _read_tlv(der, c3e, stop)
    if tag != 0x04 or c2e != stop:
        raise SM2Error("SM2Cipher CipherText must be the last OCTET STRING")
    return x1, y1, der[c3s:c3e], der[c2s:c2e]


def _check_cipher(sm2cipher_der: bytes) -> bytes:
    """The checks every decrypt makes before any backend sees the ciphertext."""
    x1, y1, _c3, c2 = decode_cipher(sm2cipher_der)
    if not _on_curve(x1, y1):
        raise SM2Error("SM2Cipher C1 is not a point on the SM2 curve")
    if not c2:
        raise SM2Error("SM2Cipher has an empty CipherText")
    return c2


_NO_FIT = ("SM2 decryption failed: C3 hash mismatch - the private key does not fit this "
           "ciphertext (or the ciphertext is corrupted)")

# DER wrappers that hand raw SM2 keys to libcrypto's decoders (reference 1.3; SEC1 ECPrivateKey
# with the named curve sm2, no public key: libcrypto derives it)
_SPKI_HEAD = bytes.fromhex("3059301306072A8648CE3D020106082A811CCF5501822D034200")
_SEC1_HEAD = bytes.fromhex("30310201010420")
_SEC1_TAIL = bytes.fromhex("A00A06082A811CCF5501822D")


class _Evp:
    """libcrypto's EVP for SM2 encryption and SM4-ECB via ctypes (tested on OpenSSL 3.0;
    1.1.1 through its SM2 alias type, untested here).

    Keys are rebuilt per call from DER (no cached key objects holding secrets). Errors stay on
    OpenSSL's error queue and are cleared after every call; nothing is printed.
    """

    EVP_PKEY_EC = 408
    EVP_PKEY_SM2 = 1172

    def __init__(self) -> None:
        import ctypes
        import ctypes.util

        path = ctypes.util.find_library("crypto")
        if not path:
            raise OSError("libcrypto not found")
        lib = ctypes.CDLL(path)
        vp, ci, cp, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t
        pcp, psz, pci = ctypes.POINTER(cp), ctypes.POINTER(sz), ctypes.POINTER(ci)
        for name, res, args in (
            ("d2i_PUBKEY", vp, [vp, pcp, ctypes.c_long]),
            ("d2i_PrivateKey", vp, [ci, vp, pcp, ctypes.c_long]),
            ("EVP_PKEY_free", None, [vp]),
            ("EVP_PKEY_CTX_new", vp, [vp, vp]), ("EVP_PKEY_CTX_free", None, [vp]),
            ("EVP_PKEY_encrypt_init", ci, [vp]), ("EVP_PKEY_encrypt", ci, [vp, vp, psz, cp, sz]),
            ("EVP_PKEY_decrypt_init", ci, [vp]), ("EVP_PKEY_decrypt", ci, [vp, vp, psz, cp, sz]),
            ("EVP_sm4_ecb", vp, []),
            ("EVP_CIPHER_CTX_new", vp, []), ("EVP_CIPHER_CTX_free", None, [vp]),
            ("EVP_CipherInit_ex", ci, [vp, vp, vp, cp, cp, ci]),
            ("EVP_CIPHER_CTX_set_padding", ci, [vp, ci]),
            ("EVP_CipherUpdate", ci, [vp, vp, pci, cp, ci]),
            ("EVP_CipherFinal_ex", ci, [vp, vp, pci]),
            ("ERR_clear_error", None, []),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        # OpenSSL 1.1.1 decodes SM2-curve keys as plain EC and needs the alias (gone in 3.0)
        self.alias = getattr(lib, "EVP_PKEY_set_alias_type", None)
        if self.alias is not None:
            self.alias.restype, self.alias.argtypes = ci, [vp, ci]
        self.lib = lib
        self.ctypes = ctypes
        self.sm4 = lib.EVP_sm4_ecb()
        if not self.sm4:
            raise OSError("libcrypto has no SM4-ECB")
        # d = 1 (public key G): proves SM2 EVP encryption works before anyone relies on it
        g = b"\x04" + GX.to_bytes(32, "big") + GY.to_bytes(32, "big")
        if self.decrypt(1, self.encrypt(g, b"self-test")) != b"self-test":
            raise OSError("libcrypto SM2 encryption self-test failed")

    def _with_alias(self, pkey: int | None) -> int | None:
        if pkey and self.alias is not None and self.alias(pkey, self.EVP_PKEY_SM2) != 1:
            self.lib.EVP_PKEY_free(pkey)
            return None
        return pkey

    def _public(self, pub: bytes) -> int | None:
        der = _SPKI_HEAD + bytes(pub)
        ptr = self.ctypes.c_char_p(der)
        return self._with_alias(self.lib.d2i_PUBKEY(None, self.ctypes.byref(ptr), len(der)))

    def _private(self, d: int) -> int | None:
        ctypes = self.ctypes
        size = len(_SEC1_HEAD) + 32 + len(_SEC1_TAIL)
        buf = ctypes.create_string_buffer(size)
        try:
            # the DER lives in a C buffer we wipe; d's own Python copies cannot be wiped
            ctypes.memmove(buf, _SEC1_HEAD, len(_SEC1_HEAD))
            ctypes.memmove(ctypes.byref(buf, len(_SEC1_HEAD)), d.to_bytes(32, "big"), 32)
            ctypes.memmove(ctypes.byref(buf, len(_SEC1_HEAD) + 32), _SEC1_TAIL, len(_SEC1_TAIL))
            ptr = ctypes.cast(buf, ctypes.c_char_p)
            pkey = self.lib.d2i_PrivateKey(self.EVP_PKEY_EC, None, ctypes.byref(ptr), size)
        finally:
            ctypes.memset(buf, 0, size)
        return self._with_alias(pkey)

    def _run(self, pkey: int | None, encrypting: bool, data: bytes) -> bytes | None:
        """EVP_PKEY_encrypt/decrypt of data with pkey (freed here); None when refused."""
        ctypes, lib = self.ctypes, self.lib
        init, op = ((lib.EVP_PKEY_encrypt_init, lib.EVP_PKEY_encrypt) if encrypting
                    else (lib.EVP_PKEY_decrypt_init, lib.EVP_PKEY_decrypt))
        ctx = lib.EVP_PKEY_CTX_new(pkey, None) if pkey else None
        out = None
        try:
            n = ctypes.c_size_t(0)
            if not ctx or init(ctx) != 1 or op(ctx, None, ctypes.byref(n), data, len(data)) != 1:
                return None
            out = ctypes.create_string_buffer(n.value)
            if op(ctx, out, ctypes.byref(n), data, len(data)) != 1:
                return None
            return out.raw[:n.value]
        finally:
            if out is not None:
                ctypes.memset(out, 0, len(out))  # a decrypted SM4 key passes through here
            if ctx:
                lib.EVP_PKEY_CTX_free(ctx)
            if pkey:
                lib.EVP_PKEY_free(pkey)
            lib.ERR_clear_error()

    def encrypt(self, pub: bytes, plaintext: bytes) -> bytes:
        pkey = self._public(pub)
        if not pkey:
            self.lib.ERR_clear_error()
            raise SM2Error("libcrypto cannot load this SM2 public key")
        ct = self._run(pkey, True, plaintext)
        if ct is None:
            raise SM2Error("libcrypto refused the SM2 encryption")
        return ct

    def decrypt(self, d: int, sm2cipher_der: bytes) -> bytes | None:
        pkey = self._private(d)
        if not pkey:
            self.lib.ERR_clear_error()
            raise SM2Error("libcrypto cannot load this SM2 private key")
        return self._run(pkey, False, sm2cipher_der)

    def sm4_ecb(self, key: bytes, data: bytes, encrypting: bool) -> bytes:
        ctypes, lib = self.ctypes, self.lib
        ctx = lib.EVP_CIPHER_CTX_new()
        out = ctypes.create_string_buffer(len(data) + 16)
        n, fin = ctypes.c_int(0), ctypes.c_int(0)
        try:
            if (not ctx
                    or lib.EVP_CipherInit_ex(ctx, self.sm4, None, key, None, int(encrypting)) != 1
                    or lib.EVP_CIPHER_CTX_set_padding(ctx, 0) != 1
                    or lib.EVP_CipherUpdate(ctx, out, ctypes.byref(n), data, len(data)) != 1
                    or lib.EVP_CipherFinal_ex(ctx, ctypes.byref(out, n.value),
                                              ctypes.byref(fin)) != 1):
                raise SM2Error("libcrypto SM4-ECB failed")
            return out.raw[:n.value + fin.value]
        finally:
            ctypes.memset(out, 0, len(out))  # a decrypted private key passes through here
            if ctx:
                lib.EVP_CIPHER_CTX_free(ctx)  # also wipes the key schedule
            lib.ERR_clear_error()


_EVP: _Evp | None = None
_EVP_ERROR = ""


def _evp() -> _Evp:
    """The libcrypto EVP binding, made on first use; SM2Unavailable if it lacks SM2 or SM4."""
    global _EVP, _EVP_ERROR
    if _EVP is None and not _EVP_ERROR:
        try:
            _EVP = _Evp()
        except (OSError, AttributeError, SM2Error) as exc:  # AttributeError: symbol missing
            _EVP_ERROR = (f"SM2 encryption needs OpenSSL's libcrypto 1.1.1 or later with SM2 and "
                          f"SM4 ({_openssl_version()}): {exc}")
    if _EVP is None:
        raise SM2Unavailable(_EVP_ERROR)
    return _EVP


def _openssl_version() -> str:
    """The loaded libcrypto's version line, for the error that says it cannot encrypt."""
    import ctypes
    import ctypes.util

    path = ctypes.util.find_library("crypto")
    if not path:
        return "no libcrypto found"
    try:
        lib = ctypes.CDLL(path)
        fn = getattr(lib, "OpenSSL_version", None) or lib.SSLeay_version  # < 1.1.0: SSLeay_*
    except (OSError, AttributeError):
        return f"{path}, version unknown"
    fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_int]
    return f"{path}: {fn(0).decode(errors='replace')}"


def encryption_backend() -> str:
    """Where SM2 encryption and SM4 run ("openssl"); SM2Unavailable when libcrypto cannot."""
    _evp()
    return "openssl"


def encrypt(pub: bytes, plaintext: bytes) -> bytes:
    """SM2-encrypt to pub with libcrypto; SM2Cipher DER SEQUENCE { x1, y1, C3 OCTET STRING, C2 }.

    The output is decoded strictly here before it is returned, so the envelope always carries
    the GM/T 0009 form its readers expect.
    """
    check_public_key(pub)
    if not plaintext:
        raise SM2Error("SM2 encryption of an empty message")
    ct = _evp().encrypt(bytes(pub), bytes(plaintext))
    if len(decode_cipher(ct)[3]) != len(plaintext):
        raise SM2Error("libcrypto wrote an SM2Cipher of the wrong length")
    return ct


def decrypt(d: int, sm2cipher_der: bytes) -> bytes:
    """Decrypt SM2Cipher DER with private key d through libcrypto; C3 is checked.

    Raises SM2Error("... key does not fit ...") when libcrypto refuses (C3 mismatch), which is
    what a wrong key (or a corrupted ciphertext) gives.
    """
    _check_private_key(d)
    der = bytes(sm2cipher_der)
    c2 = _check_cipher(der)
    m = _evp().decrypt(d, der)
    if m is None or len(m) != len(c2):
        raise SM2Error(_NO_FIT)
    return m


# Pure-Python reference (variable-time): tests and bench/envelope.py compare against it only.

def _kdf(z: bytes, klen: int) -> bytes:
    out = bytearray()
    ct = 1
    while len(out) < klen:
        out += sm3(z + ct.to_bytes(4, "big"))
        ct += 1
    return bytes(out[:klen])


def reference_encrypt(pub: bytes, plaintext: bytes) -> bytes:
    """Pure-Python SM2 encryption from GB/T 32918.4 (reference only, never used by mailbot)."""
    xb, yb = _point(pub)
    if not plaintext:
        raise SM2Error("SM2 encryption of an empty message")
    while True:
        k = secrets.randbelow(N - 1) + 1
        x1, y1 = _to_affine(_mul_g(k))  # type: ignore[misc]
        x2, y2 = _to_affine(_mul(k, xb, yb))  # type: ignore[misc]
        x2b, y2b = x2.to_bytes(32, "big"), y2.to_bytes(32, "big")
        t = _kdf(x2b + y2b, len(plaintext))
        if any(t):
            break
    c2 = bytes(a ^ b for a, b in zip(plaintext, t, strict=True))
    c3 = sm3(x2b + bytes(plaintext) + y2b)
    return tlv(0x30, _der_int(x1) + _der_int(y1) + tlv(0x04, c3) + tlv(0x04, c2))


def reference_decrypt(d: int, sm2cipher_der: bytes) -> bytes:
    """Pure-Python SM2 decryption (reference only, never used by mailbot); C3 is checked."""
    _check_private_key(d)
    c2 = _check_cipher(sm2cipher_der)
    x1, y1, c3, _c2 = decode_cipher(sm2cipher_der)
    aff = _to_affine(_mul(d, x1, y1))
    if aff is None:
        raise SM2Error("SM2Cipher C1 gives the point at infinity")
    x2b, y2b = aff[0].to_bytes(32, "big"), aff[1].to_bytes(32, "big")
    t = _kdf(x2b + y2b, len(c2))
    if not any(t):
        raise SM2Error("SM2 decryption failed: KDF output is all zero")
    m = bytes(a ^ b for a, b in zip(c2, t, strict=True))
    if not hmac.compare_digest(sm3(x2b + m + y2b), c3):
        raise SM2Error(_NO_FIT)
    return m


# ---------------------------------------------------------------------------------------------
# SM4-ECB without padding (envelopes), libcrypto's EVP sm4-ecb

def _sm4(key: bytes, data: bytes, encrypting: bool) -> bytes:
    if len(key) != 16:
        raise SM2Error("SM4 key must be 16 bytes")
    if len(data) % 16:
        raise SM2Error("SM4-ECB without padding needs a multiple of 16 bytes")
    return _evp().sm4_ecb(bytes(key), bytes(data), encrypting)


def sm4_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """SM4-ECB encrypt, no padding (len(data) % 16 == 0)."""
    return _sm4(key, data, True)


def sm4_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    """SM4-ECB decrypt, no padding (len(data) % 16 == 0)."""
    return _sm4(key, data, False)
