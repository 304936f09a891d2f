"""SDF signer: a server cipher machine through the GM/T 0018-2012 C API, via ctypes.

Per signature: e = SM3(Z||M) is computed here with the device's exported public key and the
standard ID, then SDF_InternalSign_ECC signs e with the key at `sdf_key_index` under the
access right obtained with the configured password (from the environment). Structures follow
GmSSL's sdf.h (ECCref_MAX_LEN 64, pack(1), 32-byte values right-aligned); use a library built
with that layout.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import TYPE_CHECKING

from mailbot.pki import sm2
from mailbot.pki.signer import BaseSigner, SignerError

if TYPE_CHECKING:
    from mailbot.config import CaConfig

ECCREF_MAX_LEN = 64
SGD_SM2_1_DEFAULT = 0x00020100  # GM/T 0006-2012 / GmSSL sgd.h; some headers use 0x00020200
SDR_BASE = 0x01000000

SDR_MESSAGES = {
    0x01: ("SDR_UNKNOWERR", "unknown device error"),
    0x02: ("SDR_NOTSUPPORT", "function not supported by the device"),
    0x03: ("SDR_COMMFAIL", "communication with the device failed"),
    0x04: ("SDR_HARDFAIL", "the device reports a hardware failure"),
    0x05: ("SDR_OPENDEVICE", "cannot open the device"),
    0x06: ("SDR_OPENSESSION", "cannot open a session on the device"),
    0x07: ("SDR_PARDENY", "no access right to the private key"),
    0x08: ("SDR_KEYNOTEXIST", "no key at this key index"),
    0x09: ("SDR_ALGNOTSUPPORT", "algorithm not supported (check sdf_sm2_alg_id)"),
    0x0A: ("SDR_ALGMODNOTSUPPORT", "algorithm mode not supported"),
    0x0B: ("SDR_PKOPERR", "public-key operation failed"),
    0x0C: ("SDR_SKOPERR", "private-key operation failed"),
    0x0D: ("SDR_SIGNERR", "signing failed"),
    0x0E: ("SDR_VERIFYERR", "signature verification failed"),
    0x0F: ("SDR_SYMOPERR", "symmetric operation failed"),
    0x10: ("SDR_STEPERR", "functions called in the wrong order"),
    0x11: ("SDR_FILESIZEERR", "file size error"),
    0x12: ("SDR_FILENOEXIST", "file does not exist"),
    0x13: ("SDR_FILEOFSERR", "file offset error"),
    0x14: ("SDR_KEYTYPEERR", "wrong key type"),
    0x15: ("SDR_KEYERR", "key error"),
    0x16: ("SDR_ENCDATAERR", "encrypted data error"),
    0x17: ("SDR_RANDERR", "random number generation failed"),
    0x18: ("SDR_PRKRERR", "private-key access refused: wrong password"),
    0x19: ("SDR_MACERR", "MAC error"),
    0x1A: ("SDR_FILEEXSITS", "file already exists"),
    0x1B: ("SDR_FILEWERR", "file write error"),
    0x1C: ("SDR_NOBUFFER", "device buffer too small"),
    0x1D: ("SDR_INARGERR", "bad input argument"),
    0x1E: ("SDR_OUTARGERR", "bad output argument"),
}


class ECCrefPublicKey(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("bits", ctypes.c_uint), ("x", ctypes.c_ubyte * ECCREF_MAX_LEN),
                ("y", ctypes.c_ubyte * ECCREF_MAX_LEN)]


class ECCSignature(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("r", ctypes.c_ubyte * ECCREF_MAX_LEN), ("s", ctypes.c_ubyte * ECCREF_MAX_LEN)]


class ECCrefPrivateKey(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("bits", ctypes.c_uint), ("K", ctypes.c_ubyte * ECCREF_MAX_LEN)]


class SdfError(SignerError):
    """An SDF call failed; `code` is the device's return value."""

    def __init__(self, function: str, code: int) -> None:
        self.function, self.code = function, code
        name, text = SDR_MESSAGES.get(code - SDR_BASE, ("", "")) if code >= SDR_BASE else ("", "")
        label = f"{name} 0x{code:08X}" if name else f"0x{code:08X}"
        super().__init__(f"{function} failed: {text or 'vendor-specific error'} ({label})")


def _field32(buf: ctypes.Array, what: str) -> bytes:
    raw = bytes(buf)
    if any(raw[:ECCREF_MAX_LEN - 32]):
        raise SignerError(f"device returned a {what} wider than 256 bits")
    return raw[ECCREF_MAX_LEN - 32:]


def _put32(value: int) -> ctypes.Array:
    arr = (ctypes.c_ubyte * ECCREF_MAX_LEN)()
    ctypes.memmove(ctypes.byref(arr, ECCREF_MAX_LEN - 32), value.to_bytes(32, "big"), 32)
    return arr


class SdfLibrary:
    """The SDF functions of one vendor library, with argument types declared."""

    def __init__(self, path: str) -> None:
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise SignerError(f"cannot load the SDF library {path}: {exc}") from None
        vp, ui = ctypes.c_void_p, ctypes.c_uint
        pvp, ucp = ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p
        sigs = {
            "SDF_OpenDevice": [pvp], "SDF_CloseDevice": [vp],
            "SDF_OpenSession": [vp, pvp], "SDF_CloseSession": [vp],
            "SDF_GetPrivateKeyAccessRight": [vp, ui, ucp, ui],
            "SDF_ReleasePrivateKeyAccessRight": [vp, ui],
            "SDF_ExportSignPublicKey_ECC": [vp, ui, ctypes.POINTER(ECCrefPublicKey)],
            "SDF_InternalSign_ECC": [vp, ui, ucp, ui, ctypes.POINTER(ECCSignature)],
        }
        optional = {"SDF_ExternalVerify_ECC": [vp, ui, ctypes.POINTER(ECCrefPublicKey), ucp, ui,
                                               ctypes.POINTER(ECCSignature)],
                    "SDF_GenerateKeyPair_ECC": [vp, ui, ui, ctypes.POINTER(ECCrefPublicKey),
                                                ctypes.POINTER(ECCrefPrivateKey)]}
        for name, args in {**sigs, **optional}.items():
            fn = getattr(lib, name, None)
            if fn is None:
                if name in sigs:
                    raise SignerError(f"the SDF library {path} has no {name}")
                continue
            fn.restype, fn.argtypes = ctypes.c_int, args
        self.lib = lib

    def call(self, name: str, *args: object) -> None:
        fn = getattr(self.lib, name, None)
        if fn is None:
            raise SignerError(f"the SDF library has no {name}")
        rc = fn(*args) & 0xFFFFFFFF
        if rc != 0:
            raise SdfError(name, rc)


class SdfSigner(BaseSigner):
    """Signs with a key inside an SDF device; the key never leaves it."""

    def __init__(self, library: str, key_index: int, password: bytes, *,
                 sm2_alg_id: int = SGD_SM2_1_DEFAULT) -> None:
        if not library:
            raise SignerError("signer = sdf needs sdf_library (path of the vendor's SDF .so)")
        self._sdf = SdfLibrary(library)
        self.key_index = key_index
        self._password = password
        self.sm2_alg_id = sm2_alg_id
        self._lock = threading.Lock()  # one session; SDF sessions are not thread-safe
        self._dev = ctypes.c_void_p()
        self._ses = ctypes.c_void_p()
        self._pub: bytes | None = None
        self._open()

    @classmethod
    def from_config(cls, ca: CaConfig) -> SdfSigner:
        password = os.environ.get(ca.sdf_password_env, "")
        if not password:
            raise SignerError(f"set the SDF key password in ${ca.sdf_password_env}")
        return cls(ca.sdf_library, ca.sdf_key_index, password.encode(),
                   sm2_alg_id=ca.sdf_sm2_alg_id)

    def __repr__(self) -> str:
        return f"SdfSigner(key_index={self.key_index})"

    def _open(self) -> None:
        self._sdf.call("SDF_OpenDevice", ctypes.byref(self._dev))
        try:
            self._sdf.call("SDF_OpenSession", self._dev, ctypes.byref(self._ses))
            pub = ECCrefPublicKey()
            self._sdf.call("SDF_ExportSignPublicKey_ECC", self._ses, self.key_index,
                           ctypes.byref(pub))
            if pub.bits != 256:
                raise SignerError(f"the key at index {self.key_index} is {pub.bits} bits, "
                                  "not an SM2 256-bit key")
            self._pub = b"\x04" + _field32(pub.x, "public key") + _field32(pub.y, "public key")
            sm2.check_public_key(self._pub)
        except Exception:
            self.close()
            raise

    def public_key(self) -> bytes:
        assert self._pub is not None
        return self._pub

    def _sign_digest(self, e: bytes) -> tuple[int, int]:
        sig = ECCSignature()
        with self._lock:
            if not self._ses:
                raise SignerError("the SDF signer is closed")
            self._sdf.call("SDF_GetPrivateKeyAccessRight", self._ses, self.key_index,
                           self._password, len(self._password))
            try:
                self._sdf.call("SDF_InternalSign_ECC", self._ses, self.key_index, e, len(e),
                               ctypes.byref(sig))
            finally:
                self._sdf.lib.SDF_ReleasePrivateKeyAccessRight(self._ses, self.key_index)
        r = int.from_bytes(_field32(sig.r, "signature"), "big")
        s = int.from_bytes(_field32(sig.s, "signature"), "big")
        # a device fault must not leave here as a certificate
        if not sm2.verify_digest(self.public_key(), e, r, s):
            raise SignerError("the SDF device returned a signature that does not verify")
        return r, s

    def _keygen_alg_ids(self) -> list[int]:
        # SGD_SM2_3 (encryption) of the header family the configured SGD_SM2_1 belongs to,
        # then SGD_SM2_1 itself, which some devices want for every SM2 key pair
        sm2_3 = {0x00020100: 0x00020400, 0x00020200: 0x00020800}.get(self.sm2_alg_id)
        return [a for a in (sm2_3, self.sm2_alg_id) if a is not None]

    def generate_key_pair(self) -> tuple[int, bytes]:
        """An SM2 key pair from the device's generator (SDF_GenerateKeyPair_ECC, 256 bits).

        GM/T 0018 hands the private key to the caller (it goes into the applicant's envelope);
        the buffer is wiped as soon as d is read.
        """
        pub, priv = ECCrefPublicKey(), ECCrefPrivateKey()
        try:
            with self._lock:
                if not self._ses:
                    raise SignerError("the SDF signer is closed")
                ids = self._keygen_alg_ids()
                for n, alg in enumerate(ids):
                    try:
                        self._sdf.call("SDF_GenerateKeyPair_ECC", self._ses, alg, 256,
                                       ctypes.byref(pub), ctypes.byref(priv))
                        break
                    except SdfError as exc:
                        if exc.code != SDR_BASE + 0x09 or n == len(ids) - 1:
                            raise
            if pub.bits != 256 or priv.bits != 256:
                raise SignerError("the SDF device generated a key pair that is not 256-bit SM2")
            d = int.from_bytes(_field32(priv.K, "private key"), "big")
            point = b"\x04" + _field32(pub.x, "public key") + _field32(pub.y, "public key")
        finally:
            ctypes.memset(ctypes.byref(priv), 0, ctypes.sizeof(priv))
        return d, point

    def device_verify(self, e: bytes, r: int, s: int) -> bool:
        """Ask the device to verify (SDF_ExternalVerify_ECC with the configured SGD_SM2_1)."""
        pub = ECCrefPublicKey(bits=256, x=_put32(int.from_bytes(self.public_key()[1:33], "big")),
                              y=_put32(int.from_bytes(self.public_key()[33:], "big")))
        sig = ECCSignature(r=_put32(r), s=_put32(s))
        try:
            with self._lock:
                self._sdf.call("SDF_ExternalVerify_ECC", self._ses, self.sm2_alg_id,
                               ctypes.byref(pub), e, len(e), ctypes.byref(sig))
        except SdfError as exc:
            if exc.code == SDR_BASE + 0x0E:
                return False
            raise
        return True

    def close(self) -> None:
        if self._ses:
            self._sdf.lib.SDF_CloseSession(self._ses)
            self._ses = ctypes.c_void_p()
        if self._dev:
            self._sdf.lib.SDF_CloseDevice(self._dev)
            self._dev = ctypes.c_void_p()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
