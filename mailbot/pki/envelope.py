"""SM2EnvelopedKey (GM/T 0009-2012 / GB/T 35276-2017): the encryption private key, delivered.

    SM2EnvelopedKey ::= SEQUENCE {
      symAlgID               AlgorithmIdentifier,  -- {1.2.156.10197.1.104.1 sm4-ecb, NULL}
      symEncryptedKey        SM2Cipher,            -- random SM4 key, to the SIGNING public key
      Sm2PublicKey           BIT STRING,           -- 04||X||Y of the encryption key pair
      Sm2EncryptedPrivateKey BIT STRING }          -- SM4-ECB(symKey, d as 32 bytes), no padding

Layout as emmansun/gmsm writes it (reference §4). The reader also takes a 64-byte private-key
field (d right-aligned, SDF/SKF style: the last 32 bytes) and a bare 1.2.156.10197.1.104 OID.
The SM2 encryption and SM4-ECB run in OpenSSL's libcrypto (mailbot.pki.sm2), never in Python.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from asn1crypto import pem, x509

from mailbot.pki import der, sm2
from mailbot.pki.csr import OID_EC_PUBLIC_KEY as EC_PUBLIC_KEY
from mailbot.pki.csr import OID_SM2 as SM2_CURVE
from mailbot.pki.errors import PkiError

SM4_ECB = "1.2.156.10197.1.104.1"
SM4_BARE = "1.2.156.10197.1.104"


class EnvelopeError(PkiError, ValueError):
    """The envelope cannot be read or opened; the message says why."""


def make_envelope(recipient_sign_pub: bytes, enc_d: int) -> bytes:
    """Wrap the encryption private key enc_d for the holder of recipient_sign_pub."""
    sm2.check_public_key(recipient_sign_pub)
    sym_key = secrets.token_bytes(16)
    alg = der.tlv(0x30, der.enc_oid(SM4_ECB) + b"\x05\x00")
    wrapped = sm2.encrypt(recipient_sign_pub, sym_key)
    enc_pub = sm2.public_key_of(enc_d)
    enc_priv = sm2.sm4_ecb_encrypt(sym_key, enc_d.to_bytes(32, "big"))
    return der.tlv(0x30, alg + wrapped + der.tlv(0x03, b"\x00" + enc_pub)
                + der.tlv(0x03, b"\x00" + enc_priv))


@dataclass(frozen=True)
class EnvelopeParts:
    sym_alg: str
    sym_encrypted_key: bytes  # SM2Cipher DER
    public_key: bytes  # 65 bytes
    encrypted_private_key: bytes  # 32 (or 64) bytes


def parse_envelope(data: bytes) -> EnvelopeParts:
    """Read the four fields; strict enough to refuse what is not an SM2EnvelopedKey."""
    data = bytes(data)
    try:
        top = der.read(data)
        if top.tag != der.SEQUENCE or top.end != len(data):
            raise EnvelopeError("not an SM2EnvelopedKey: not one DER SEQUENCE")
        items = top.children()
        if len(items) != 4:
            raise EnvelopeError(f"not an SM2EnvelopedKey: {len(items)} fields, expected 4")
        alg, cipher, pub, priv = items
        alg_items = alg.children() if alg.tag == der.SEQUENCE else []
        if not alg_items or alg_items[0].tag != der.OID:
            raise EnvelopeError("SM2EnvelopedKey symAlgID is not an AlgorithmIdentifier")
        oid = der.oid_str(alg_items[0].content)
        if oid not in (SM4_ECB, SM4_BARE):
            raise EnvelopeError(f"SM2EnvelopedKey symmetric algorithm {oid} is not SM4-ECB")
        if cipher.tag != der.SEQUENCE:
            raise EnvelopeError("SM2EnvelopedKey symEncryptedKey is not an SM2Cipher")
        for name, node in (("Sm2PublicKey", pub), ("Sm2EncryptedPrivateKey", priv)):
            if node.tag != der.BIT_STRING or not node.content or node.content[0] != 0:
                raise EnvelopeError(f"SM2EnvelopedKey {name} is not a whole-byte BIT STRING")
    except der.DerError as exc:
        raise EnvelopeError(f"not an SM2EnvelopedKey: {exc}") from None
    enc_priv = priv.content[1:]
    if len(enc_priv) not in (32, 64):
        raise EnvelopeError(f"encrypted private key is {len(enc_priv)} bytes, expected 32 or 64")
    public_key = pub.content[1:]
    try:
        sm2.check_public_key(public_key)
    except sm2.SM2Error as exc:
        raise EnvelopeError(f"SM2EnvelopedKey Sm2PublicKey: {exc}") from None
    return EnvelopeParts(oid, cipher.raw, public_key, enc_priv)


def certificate_public_key(cert: bytes) -> bytes:
    """The SM2 public key 04||X||Y of a certificate file (DER or PEM), e.g. env.cer."""
    data = bytes(cert)
    try:
        if pem.detect(data):
            data = pem.unarmor(data)[2]
        spki = x509.Certificate.load(data, strict=True).public_key
        alg = spki["algorithm"]["algorithm"].dotted
        params = spki["algorithm"]["parameters"]
        curve = params.chosen.dotted if alg == EC_PUBLIC_KEY and params.name == "named" else None
        point = bytes(spki["public_key"].contents)[1:]
    except (ValueError, TypeError, KeyError) as exc:
        raise EnvelopeError(f"not a certificate: {exc}") from None
    # id-ecPublicKey + sm2 is the norm; the bare sm2 OID and explicit parameters are seen too
    if alg not in (EC_PUBLIC_KEY, SM2_CURVE) or curve not in (None, SM2_CURVE):
        raise EnvelopeError("the certificate does not hold an SM2 public key")
    try:
        sm2.check_public_key(point)
    except sm2.SM2Error as exc:
        raise EnvelopeError(f"the certificate's public key: {exc}") from None
    return point


def open_envelope(sign_d: int, data: bytes, *, certificate: bytes | None = None) -> int:
    """The encryption private key d, checked against the envelope's public key.

    With `certificate` (env.cer, DER or PEM) d must also be the key of that certificate, so a
    key is never taken from an envelope that does not belong to the pair it came with.
    """
    cert_pub = certificate_public_key(certificate) if certificate is not None else None
    parts = parse_envelope(data)
    try:
        sym_key = sm2.decrypt(sign_d, parts.sym_encrypted_key)
    except sm2.SM2Unavailable as exc:
        raise EnvelopeError(str(exc)) from None  # libcrypto unusable: say so, not "wrong key"
    except sm2.SM2Error as exc:
        raise EnvelopeError("this signing key does not fit the envelope (it was made for "
                            f"another key, or it is corrupted): {exc}") from None
    if len(sym_key) != 16:
        raise EnvelopeError(f"the wrapped SM4 key is {len(sym_key)} bytes, expected 16")
    try:
        plain = sm2.sm4_ecb_decrypt(sym_key, parts.encrypted_private_key)
    except sm2.SM2Error as exc:
        raise EnvelopeError(str(exc)) from None
    if len(plain) == 64 and any(plain[:32]):
        raise EnvelopeError("the 64-byte private key field does not hold a right-aligned key")
    d = int.from_bytes(plain[-32:], "big")
    if not 1 <= d <= sm2.N - 2:
        raise EnvelopeError("the decrypted private key is out of range")
    pub = sm2.public_key_of(d)
    if not hmac.compare_digest(pub, parts.public_key):
        raise EnvelopeError("the decrypted private key does not match the envelope's public key")
    if cert_pub is not None and not hmac.compare_digest(pub, cert_pub):
        raise EnvelopeError("the opened key is not the key of the given certificate: that "
                            "certificate is not the encryption certificate (env.cer) of this "
                            "envelope's pair")
    return d
