"""Helpers for the PKI-core tests (sm2, csr): OpenSSL-made keys and requests, DER builders.

OpenSSL artefacts are made once per test session (cached) in a temporary directory.
"""

from __future__ import annotations

import atexit
import base64
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

from mailbot.pki import der, sm2
from mailbot.pki.der import tlv

STD_ID = "distid:1234567812345678"
SM2_SPKI_ALG = der.tlv(0x30, der.enc_oid("1.2.840.10045.2.1") + der.enc_oid("1.2.156.10197.1.301"))
SM3_WITH_SM2 = der.tlv(0x30, der.enc_oid("1.2.156.10197.1.501"))
SM3_WITH_SM2_NULL = der.tlv(0x30, der.enc_oid("1.2.156.10197.1.501") + b"\x05\x00")


@functools.cache
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="mailbot-pki-core-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    """Run the OpenSSL CLI in the work directory; raise with its stderr on failure."""
    proc = subprocess.run(["openssl", *args], cwd=workdir(), input=stdin, capture_output=True,
                          timeout=60, check=False)
    if proc.returncode:
        raise RuntimeError(f"openssl {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def private_key_of_pem(path: Path) -> int:
    """d from an OpenSSL SM2 key: ECPrivateKey, or PKCS#8 wrapping one."""
    kids = der.read(openssl("pkey", "-in", str(path), "-outform", "DER")).children()
    if kids[1].tag != der.OCTET_STRING:  # PKCS#8: version, AlgorithmIdentifier, OCTET STRING
        kids = der.read(kids[2].content).children()
    return int.from_bytes(kids[1].content, "big")


@functools.cache
def sm2_key(name: str = "user") -> tuple[Path, int, bytes]:
    """(key.pem path, d, 65-byte public key) of an OpenSSL-generated SM2 key; NAME.pub written."""
    path = workdir() / f"{name}.key"
    openssl("genpkey", "-algorithm", "SM2", "-out", str(path))
    d = private_key_of_pem(path)
    openssl("pkey", "-in", str(path), "-pubout", "-out", str(workdir() / f"{name}.pub"))
    return path, d, sm2.public_key_of(d)


@functools.cache
def openssl_csr(kind: str) -> bytes:
    """PEM requests made by OpenSSL: "sm2" (standard ID), "sm2-noid", "rsa2048", "p256"."""
    out = workdir() / f"{kind}.csr"
    subj = "/C=CN/ST=Fujian/L=Xiamen/O=Test Co/OU=IT/CN=alice.example.cn"
    if kind in ("sm2", "sm2-noid"):
        key = sm2_key()[0]
        extra = ["-sigopt", STD_ID] if kind == "sm2" else []
        openssl("req", "-new", "-key", str(key), "-sm3", *extra, "-subj", subj, "-out", str(out))
    elif kind == "rsa2048":
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
                str(workdir() / "rsa.key"), "-subj", subj, "-out", str(out))
    elif kind == "p256":
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(workdir() / "p256.key"), "-subj", subj, "-out", str(out))
    else:
        raise ValueError(kind)
    return out.read_bytes()


# --- building request variants -----------------------------------------------------------------

def name(*rdns: tuple[str, str, int]) -> bytes:
    """Name from (oid, text, string tag) triples, one RDN each."""
    out = b""
    for oid, text, tag in rdns:
        raw = text.encode("utf-16-be") if tag == der.BMP_STRING else text.encode()
        out += tlv(0x31, tlv(0x30, der.enc_oid(oid) + tlv(tag, raw)))
    return tlv(0x30, out)


STD_NAME = name(("2.5.4.6", "CN", der.PRINTABLE_STRING), ("2.5.4.10", "测试公司", der.UTF8_STRING),
                ("2.5.4.3", "server.example.cn", der.UTF8_STRING))


def spki(pub: bytes, alg: bytes = SM2_SPKI_ALG, unused: int = 0) -> bytes:
    return tlv(0x30, alg + tlv(0x03, bytes([unused]) + pub))


def info(pub: bytes, *, version: bytes = b"\x02\x01\x00", subject: bytes = STD_NAME,
         key: bytes | None = None, attributes: bytes | None = b"\xa0\x00") -> bytes:
    body = version + subject + (key if key is not None else spki(pub))
    return tlv(0x30, body + (attributes if attributes is not None else b""))


def request(d: int, tbs: bytes, *, sigalg: bytes = SM3_WITH_SM2, uid: bytes = sm2.DEFAULT_ID,
            unused: int = 0, signature: bytes | None = None) -> bytes:
    """CertificationRequest over tbs, signed with our own sm2.sign (or a given signature)."""
    sig = signature if signature is not None else sm2.sign(d, tbs, uid)
    return tlv(0x30, tbs + sigalg + tlv(0x03, bytes([unused]) + sig))


def cfca_attributes(temp_pub: bytes) -> bytes:
    """CFCA style [0]: attributes NOT wrapped in a SET, temp key left-aligned in 64-byte fields."""
    blob = (b"\x00\xb4\x00\x00\x00\x01\x00\x00" + temp_pub[1:33] + b"\x00" * 32
            + temp_pub[33:65] + b"\x00" * 32)
    temp = tlv(0x04, tlv(0x30, der.enc_int(1) + tlv(0x04, blob)))
    return tlv(0xA0, tlv(0x30, der.enc_oid("1.2.840.113549.1.9.7") + tlv(0x13, b"111111"))
               + tlv(0x30, der.enc_oid("1.2.840.113549.1.9.63") + temp))


def explicit_sm2_alg() -> bytes:
    """id-ecPublicKey with explicit ECParameters equal to SM2's."""
    field_id = tlv(0x30, der.enc_oid("1.2.840.10045.1.1") + der.enc_int(sm2.P))
    curve = tlv(0x30, tlv(0x04, sm2.A.to_bytes(32, "big")) + tlv(0x04, sm2.B.to_bytes(32, "big")))
    base = tlv(0x04, b"\x04" + sm2.GX.to_bytes(32, "big") + sm2.GY.to_bytes(32, "big"))
    params = tlv(0x30, der.enc_int(1) + field_id + curve + base + der.enc_int(sm2.N)
                 + der.enc_int(1))
    return tlv(0x30, der.enc_oid("1.2.840.10045.2.1") + params)


def pem(der_bytes: bytes, label: str = "CERTIFICATE REQUEST", crlf: bool = False) -> bytes:
    b64 = base64.b64encode(der_bytes).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    nl = "\r\n" if crlf else "\n"
    return nl.join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def pem_to_der(data: bytes) -> bytes:
    body = b"".join(ln for ln in data.splitlines() if not ln.startswith(b"-----"))
    return base64.b64decode(body)
