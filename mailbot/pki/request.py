"""Build a certificate request (PKCS#10, GM/T 0092-2020) for an SM2 key: what an applicant's
device makes, here for the demo and for tests that need a request without the OpenSSL CLI.

The request carries the key as id-ecPublicKey on the SM2 curve (1.2.156.10197.1.301), an empty
attribute set, and an SM3withSM2 signature (1.2.156.10197.1.501, parameters absent) over the
DER CertificationRequestInfo with the standard SM2 ID 1234567812345678, as
`openssl req -new -sm3 -sigopt distid:1234567812345678` writes it.
"""

from __future__ import annotations

from asn1crypto import csr, pem

from mailbot.pki import sm2
from mailbot.pki.ca import DN_KEYS, build_name, sig_alg, spki_of
from mailbot.pki.errors import PkiError


class RequestError(PkiError, ValueError):
    """The request cannot be built from what was given (the message says which part)."""


def build_csr(private_key: int, subject: dict[str, str], *, uid: bytes = sm2.DEFAULT_ID) -> bytes:
    """DER PKCS#10 request for SM2 key `private_key`, subject from {"C": "CN", "O": ..., ...}.

    Keys: C, ST, L, O, OU, CN, E/emailAddress, serialNumber (any case); the names are written
    in C, ST, L, O, OU, CN order, C as PrintableString and the rest as UTF8String. `uid` is
    the SM2 ID signed with (the standard one unless a test asks for another).
    """
    unknown = sorted(k for k in subject if k.upper() not in DN_KEYS)
    if unknown:
        raise RequestError(f"unknown subject attribute(s) {', '.join(unknown)}; use "
                           f"{', '.join(sorted(DN_KEYS))}")
    empty = sorted(k for k, v in subject.items() if not str(v).strip())
    if empty:  # build_name drops empty values; a request must not silently lose a name
        raise RequestError(f"empty subject attribute(s) {', '.join(empty)}")
    try:
        public_key = sm2.public_key_of(private_key)
    except (sm2.SM2Error, TypeError) as exc:
        raise RequestError(f"not an SM2 private key: {exc}") from None
    info = csr.CertificationRequestInfo({
        "version": "v1",
        "subject": build_name({k: str(v).strip() for k, v in subject.items()}),
        "subject_pk_info": spki_of(public_key),
        "attributes": [],
    })
    tbs = info.dump()
    request = csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": sig_alg(),
        "signature": sm2.sign(private_key, tbs, uid),
    })
    return request.dump()


def csr_pem(der_bytes: bytes) -> bytes:
    """The request as PEM (`-----BEGIN CERTIFICATE REQUEST-----`), what applicants attach."""
    return pem.armor("CERTIFICATE REQUEST", der_bytes)
