"""Soft signer: an SM2 private key in a PEM file (PKCS#8 or SEC1, optionally encrypted).

Unencrypted keys are parsed here; encrypted ones (PKCS#8 PBES2 or legacy "Proc-Type:
ENCRYPTED" SEC1) are opened with OpenSSL's libcrypto through ctypes, which knows every
cipher OpenSSL can write (AES, SM4, ...). Key files readable by group or others are refused.

Keys written here with a passphrase are PKCS#8 EncryptedPrivateKeyInfo, PBES2 (RFC 8018):
SM4-CBC (1.2.156.10197.1.104.2, random 16-byte IV) keyed by PBKDF2 with HMAC-SHA256, a random
16-byte salt and 600,000 iterations (OWASP's figure for PBKDF2-HMAC-SHA256). HMAC-SM3 would be
the national choice, but OpenSSL 3.0 has no PBKDF2 PRF for it (no hmacWithSM3 OID), and the
file must open with `openssl pkey -passin`. libcrypto does the work (PKCS5_pbe2_set_iv +
PKCS8_set0_pbe, as `openssl pkcs8 -topk8 -v2 sm4-cbc -v2prf hmacWithSHA256 -iter 600000`).
Neither the passphrase nor key material is ever logged or put into an exception message.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import os
import re
import secrets
import stat
from pathlib import Path

from asn1crypto import core, keys

from mailbot.pki import der, sm2
from mailbot.pki.signer import BaseSigner, SignerError

OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_SM2 = "1.2.156.10197.1.301"
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)

# How a key is encrypted at rest (see the module docstring)
KEY_CIPHER = "SM4-CBC"
KEY_CIPHER_OID = "1.2.156.10197.1.104.2"
KEY_PBKDF2_PRF = "hmacWithSHA256"
KEY_PBKDF2_ITERATIONS = 600_000
KEY_PBKDF2_SALT_BYTES = 16


class KeyFileError(SignerError):
    """A key file cannot be used; the message says why (never shows key material)."""


def check_key_file_mode(path: Path) -> None:
    """Refuse a key file that group or others may read or write."""
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: key file mode {stat.S_IMODE(st.st_mode):04o} lets others "
                           "read it; run: chmod 600 " + str(path))


_SM2_OID_DER = bytes.fromhex("06082A811CCF5501822D")
_EC_OID_DER = bytes.fromhex("06072A8648CE3D0201")


def _ec_private_key_der(d: int, with_params: bool) -> bytes:
    # ECPrivateKey (SEC1): version 1, 32-octet d, [0] curve (SEC1 form only), [1] public key
    body = bytes.fromhex("020101") + der.tlv(0x04, d.to_bytes(32, "big"))
    if with_params:
        body += der.tlv(0xA0, _SM2_OID_DER)
    body += der.tlv(0xA1, der.tlv(0x03, b"\x00" + sm2.public_key_of(d)))
    return der.tlv(0x30, body)


def pkcs8_der(d: int) -> bytes:
    """PKCS#8 PrivateKeyInfo as OpenSSL writes an SM2 key (id-ecPublicKey + sm2 curve)."""
    alg = der.tlv(0x30, _EC_OID_DER + _SM2_OID_DER)
    return der.tlv(0x30, bytes.fromhex("020100") + alg + der.tlv(0x04, _ec_private_key_der(d, False)))


def sec1_der(d: int) -> bytes:
    return _ec_private_key_der(d, True)


def _pem(label: str, der: bytes) -> bytes:
    b64 = base64.encodebytes(der).replace(b"\n", b"")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {label}-----\n".encode() + b"\n".join(lines)
            + f"\n-----END {label}-----\n".encode())


def private_key_pem(d: int, *, fmt: str = "pkcs8", passphrase: bytes | None = None) -> bytes:
    """PEM of an SM2 private key: PKCS#8 ("pkcs8") or SEC1 ("sec1"); encrypted if passphrase."""
    if passphrase:
        return _libcrypto().encrypt_pkcs8(pkcs8_der(d), passphrase)
    if fmt == "sec1":
        return _pem("EC PRIVATE KEY", sec1_der(d))
    return _pem("PRIVATE KEY", pkcs8_der(d))


def write_private_key(path: Path, d: int, *, passphrase: bytes | None = None) -> None:
    """Write a key file created with mode 0600 (never briefly world-readable)."""
    data = private_key_pem(d, passphrase=passphrase)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _d_from_ec(der: bytes) -> int:
    ec = keys.ECPrivateKey.load(der)
    params = ec["parameters"]
    if params.native is not None and params.chosen.native not in (OID_SM2, "1.2.156.10197.1.301"):
        raise KeyFileError(f"not an SM2 key (curve {params.chosen.native})")
    return int.from_bytes(bytes(ec["private_key"].contents), "big")


def _d_from_pkcs8(der: bytes) -> int:
    info = keys.PrivateKeyInfo.load(der)
    alg = info["private_key_algorithm"]
    oid = alg["algorithm"].dotted
    if oid == OID_EC_PUBLIC_KEY:
        curve = alg["parameters"].chosen
        name = curve.dotted if isinstance(curve, core.ObjectIdentifier) else "explicit"
        if name != OID_SM2:
            raise KeyFileError(f"not an SM2 key (curve {name})")
    elif oid != OID_SM2:
        raise KeyFileError(f"not an SM2 key (algorithm {oid})")
    return _d_from_ec(bytes(info["private_key"].contents))


def load_private_key(data: bytes, passphrase: bytes | None = None) -> int:
    """The private scalar d from PEM (PKCS#8, SEC1, encrypted PKCS#8/SEC1) or DER bytes."""
    m = _PEM.search(data)
    try:
        if m is None:
            der = bytes(data)
            try:
                d = _d_from_pkcs8(der)
            except (ValueError, TypeError):
                d = _d_from_ec(der)
        else:
            label, body = m.group(1).decode(), m.group(2)
            if label == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in body:
                if not passphrase:
                    raise KeyFileError("the key file is encrypted and no passphrase was given")
                d = _libcrypto().decrypt_key(m.group(0), passphrase)
            elif label == "PRIVATE KEY":
                d = _d_from_pkcs8(base64.b64decode(body))
            elif label in ("EC PRIVATE KEY", "SM2 PRIVATE KEY"):  # OpenSSL 3 `ec` writes SM2
                d = _d_from_ec(base64.b64decode(body))
            else:
                raise KeyFileError(f"a PEM {label!r} is not a private key")
    except KeyFileError:
        raise
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"unreadable private key ({type(exc).__name__})") from None
    if not 1 <= d <= sm2.N - 2:
        raise KeyFileError("the private key is out of range for SM2")
    return d


def is_encrypted_key(data: bytes) -> bool:
    """True for an encrypted PEM key (PKCS#8 EncryptedPrivateKeyInfo or legacy SEC1)."""
    m = _PEM.search(data)
    return m is not None and (m.group(1) == b"ENCRYPTED PRIVATE KEY"
                              or b"Proc-Type: 4,ENCRYPTED" in m.group(2))


def key_encryption(data: bytes) -> str | None:
    """How a key file is protected, for people: None when in clear, else e.g.
    "PBES2 sm4-cbc, PBKDF2 hmacWithSHA256 600000 iterations" (read without the passphrase)."""
    if not is_encrypted_key(data):
        return None
    m = _PEM.search(data)
    assert m is not None
    if m.group(1) != b"ENCRYPTED PRIVATE KEY":
        return "legacy PEM encryption (Proc-Type ENCRYPTED)"
    try:
        info = keys.EncryptedPrivateKeyInfo.load(base64.b64decode(m.group(2)))
        alg = info["encryption_algorithm"]
        if alg["algorithm"].native != "pbes2":
            return f"PKCS#8 {alg['algorithm'].native}"
        params = alg["parameters"]
        scheme = params["encryption_scheme"]["algorithm"]
        cipher = "sm4-cbc" if scheme.dotted == KEY_CIPHER_OID else str(scheme.native)
        kdf = params["key_derivation_func"]
        if kdf["algorithm"].native != "pbkdf2":
            return f"PBES2 {cipher}, {kdf['algorithm'].native}"
        kp = kdf["parameters"]
        prf = "hmacWith" + str(kp["prf"]["algorithm"].native).upper()  # as OpenSSL names it
        return f"PBES2 {cipher}, PBKDF2 {prf} {kp['iteration_count'].native} iterations"
    except (ValueError, TypeError, KeyError):
        return "PKCS#8 encrypted (unrecognised parameters)"


class SoftSigner(BaseSigner):
    """Signs with an SM2 key held in this process (loaded from a protected file)."""

    def __init__(self, d: int) -> None:
        self._d = d
        self._pub = sm2.public_key_of(d)

    def __repr__(self) -> str:  # never show the key
        return f"SoftSigner(public_key={self._pub[1:9].hex()}...)"

    @classmethod
    def from_file(cls, path: str | Path, *, passphrase: bytes | None = None,
                  passphrase_env: str = "") -> SoftSigner:
        p = Path(path)
        if not p.exists():
            raise KeyFileError(f"{p}: no CA key file (run `mailbot ca init`)")
        check_key_file_mode(p)
        if passphrase is None and passphrase_env and os.environ.get(passphrase_env):
            passphrase = os.environ[passphrase_env].encode()
        data = p.read_bytes()
        if not passphrase and is_encrypted_key(data):
            where = f"set {passphrase_env}" if passphrase_env else "give its passphrase"
            raise KeyFileError(f"{p}: the CA key is encrypted and no passphrase was given: "
                               f"{where}")
        try:
            return cls(load_private_key(data, passphrase))
        except KeyFileError as exc:
            raise KeyFileError(f"{p}: {exc}") from None

    def public_key(self) -> bytes:
        return self._pub

    def _sign_digest(self, e: bytes) -> tuple[int, int]:
        return sm2.sign_digest(self._d, e)

    def generate_key_pair(self) -> tuple[int, bytes]:
        """An SM2 key pair from OpenSSL's libcrypto (EVP_PKEY keygen, its DRBG)."""
        return _libcrypto().generate_sm2_key()


class _LibCrypto:
    """The few libcrypto calls needed for encrypted PEM keys and SM2 key generation."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("crypto")
        if not path:
            raise KeyFileError("encrypted key files need OpenSSL's libcrypto, not found")
        lib = ctypes.CDLL(path)
        vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        for name, res, args in (
            ("BIO_new_mem_buf", vp, [cp, ci]), ("BIO_new", vp, [vp]), ("BIO_s_mem", vp, []),
            ("BIO_free", ci, [vp]), ("BIO_ctrl", ctypes.c_long, [vp, ci, ctypes.c_long, vp]),
            ("PEM_read_bio_PrivateKey", vp, [vp, vp, vp, cp]),
            ("d2i_PKCS8_PRIV_KEY_INFO", vp, [vp, ctypes.POINTER(cp), ctypes.c_long]),
            ("PKCS8_PRIV_KEY_INFO_free", None, [vp]), ("EVP_sm4_cbc", vp, []),
            ("OBJ_txt2nid", ci, [cp]),
            ("PKCS5_pbe2_set_iv", vp, [vp, ci, cp, ci, cp, ci]),
            ("PKCS8_set0_pbe", vp, [cp, ci, vp, vp]), ("X509_ALGOR_free", None, [vp]),
            ("PEM_write_bio_PKCS8", ci, [vp, vp]), ("X509_SIG_free", None, [vp]),
            ("EVP_PKEY_free", None, [vp]),
            ("EVP_PKEY_get_bn_param", ci, [vp, cp, ctypes.POINTER(vp)]),
            ("BN_bn2binpad", ci, [vp, cp, ci]), ("BN_clear_free", None, [vp]),
            ("ERR_clear_error", None, []),
            ("EVP_PKEY_CTX_new_from_name", vp, [vp, cp, cp]), ("EVP_PKEY_CTX_free", None, [vp]),
            ("EVP_PKEY_keygen_init", ci, [vp]),
            ("EVP_PKEY_generate", ci, [vp, ctypes.POINTER(vp)]),
            ("EVP_PKEY_get_octet_string_param", ci,
             [vp, cp, cp, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        self.lib = lib

    def decrypt_key(self, pem: bytes, passphrase: bytes) -> int:
        lib = self.lib
        bio = lib.BIO_new_mem_buf(pem, len(pem))
        pkey = lib.PEM_read_bio_PrivateKey(bio, None, None, passphrase)
        lib.BIO_free(bio)
        bn = ctypes.c_void_p()
        try:
            if not pkey:
                raise KeyFileError("cannot decrypt the key file: wrong passphrase or "
                                   "unsupported encryption")
            if lib.EVP_PKEY_get_bn_param(pkey, b"priv", ctypes.byref(bn)) != 1:
                raise KeyFileError("the encrypted key file holds no EC private key")
            out = ctypes.create_string_buffer(32)
            if lib.BN_bn2binpad(bn, out, 32) != 32:
                raise KeyFileError("the private key is longer than 256 bits")
            return int.from_bytes(out.raw, "big")
        finally:
            if bn:
                lib.BN_clear_free(bn)
            if pkey:
                lib.EVP_PKEY_free(pkey)
            lib.ERR_clear_error()

    def generate_sm2_key(self) -> tuple[int, bytes]:
        """(d, 04||X||Y) of a fresh SM2 key made by libcrypto; d in [1, n-2]."""
        lib = self.lib
        for _ in range(8):
            ctx = lib.EVP_PKEY_CTX_new_from_name(None, b"SM2", None)
            pkey = ctypes.c_void_p()
            bn = ctypes.c_void_p()
            try:
                if (not ctx or lib.EVP_PKEY_keygen_init(ctx) != 1
                        or lib.EVP_PKEY_generate(ctx, ctypes.byref(pkey)) != 1 or not pkey):
                    raise SignerError("libcrypto could not generate an SM2 key pair")
                if lib.EVP_PKEY_get_bn_param(pkey, b"priv", ctypes.byref(bn)) != 1:
                    raise SignerError("libcrypto gave no private key for the SM2 key pair")
                out = ctypes.create_string_buffer(32)
                if lib.BN_bn2binpad(bn, out, 32) != 32:
                    raise SignerError("libcrypto gave an SM2 private key wider than 256 bits")
                d = int.from_bytes(out.raw, "big")
                ctypes.memset(out, 0, 32)
                pub = ctypes.create_string_buffer(65)
                n = ctypes.c_size_t()
                if (lib.EVP_PKEY_get_octet_string_param(pkey, b"pub", pub, 65,
                                                        ctypes.byref(n)) != 1 or n.value != 65):
                    raise SignerError("libcrypto gave no public key for the SM2 key pair")
            finally:
                if bn:
                    lib.BN_clear_free(bn)
                if pkey:
                    lib.EVP_PKEY_free(pkey)
                if ctx:
                    lib.EVP_PKEY_CTX_free(ctx)
                lib.ERR_clear_error()
            if 1 <= d <= sm2.N - 2:  # GB/T 32918: d != n-1
                return d, pub.raw
        raise SignerError("libcrypto kept generating SM2 keys out of range")  # pragma: no cover

    def encrypt_pkcs8(self, der: bytes, passphrase: bytes) -> bytes:
        """PEM EncryptedPrivateKeyInfo of a PKCS#8 DER key: PBES2, SM4-CBC, PBKDF2-HMAC-SHA256."""
        lib = self.lib
        cipher = lib.EVP_sm4_cbc()
        prf = lib.OBJ_txt2nid(KEY_PBKDF2_PRF.encode())
        if not cipher or prf <= 0:
            lib.ERR_clear_error()
            raise KeyFileError(f"this OpenSSL has no {KEY_CIPHER} or {KEY_PBKDF2_PRF}: "
                               "cannot encrypt the key")
        buf = ctypes.c_char_p(der)
        p8 = lib.d2i_PKCS8_PRIV_KEY_INFO(None, ctypes.byref(buf), len(der))
        salt = secrets.token_bytes(KEY_PBKDF2_SALT_BYTES)
        alg = sig = None
        bio = lib.BIO_new(lib.BIO_s_mem())
        try:
            if p8:
                # aiv NULL: libcrypto draws a random IV; the salt is ours (16 bytes, RFC 8018)
                alg = lib.PKCS5_pbe2_set_iv(cipher, KEY_PBKDF2_ITERATIONS, salt, len(salt),
                                            None, prf)
            if alg:
                sig = lib.PKCS8_set0_pbe(passphrase, len(passphrase), p8, alg)
                if sig:
                    alg = None  # owned by the X509_SIG now
            if not sig or lib.PEM_write_bio_PKCS8(bio, sig) != 1:
                raise KeyFileError(f"libcrypto could not encrypt the key ({KEY_CIPHER})")
            ptr = ctypes.c_char_p()
            n = lib.BIO_ctrl(bio, 3, 0, ctypes.byref(ptr))  # BIO_get_mem_data
            return ctypes.string_at(ptr, n)
        finally:
            if sig:
                lib.X509_SIG_free(sig)
            if alg:
                lib.X509_ALGOR_free(alg)
            if p8:
                lib.PKCS8_PRIV_KEY_INFO_free(p8)  # clears the key octets as it frees them
            lib.BIO_free(bio)
            lib.ERR_clear_error()


_LIB: _LibCrypto | None = None


def _libcrypto() -> _LibCrypto:
    global _LIB
    if _LIB is None:
        _LIB = _LibCrypto()
    return _LIB
