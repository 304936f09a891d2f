"""The request builder (mailbot.pki.request): GM/T 0092 requests that mailbot's own check and
OpenSSL 3 both accept, signed with the standard SM2 ID."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from asn1crypto import csr as asn1_csr

from mailbot.pki import sm2
from mailbot.pki.csr import check_csr
from mailbot.pki.errors import PkiError
from mailbot.pki.request import RequestError, build_csr, csr_pem
from tests.support.pki_csr import STD_ID, workdir

ORG = "厦门鹭岛港航科技有限公司"
SUBJECT = {"C": "CN", "O": ORG, "CN": ORG}
SM2_SPKI_PREFIX = bytes.fromhex("3059301306072A8648CE3D020106082A811CCF5501822D03420004")
SM3_WITH_SM2_ABSENT = bytes.fromhex("300A06082A811CCF55018375")


@pytest.fixture(scope="module")
def key() -> int:
    return sm2.generate_private_key()


def test_mailbots_own_check_accepts_it_without_a_finding(key: int) -> None:
    der = build_csr(key, SUBJECT)
    report = check_csr(der)
    assert report.valid and report.signature_verified
    assert report.algorithm == "SM2" and report.signature_algorithm == "SM3withSM2"
    assert report.findings == [] and report.quirks == []
    assert report.public_key == sm2.public_key_of(key)
    assert report.subject_fields == {"C": "CN", "O": ORG, "CN": ORG}
    assert check_csr(csr_pem(der)).valid  # and as the PEM applicants attach


def test_the_encoding_is_what_gm_t_0092_and_openssl_write(key: int) -> None:
    der = build_csr(key, SUBJECT)
    req = asn1_csr.CertificationRequest.load(der, strict=True)
    info = req["certification_request_info"]
    assert info["version"].native == "v1"
    assert info["subject_pk_info"].dump() == SM2_SPKI_PREFIX + sm2.public_key_of(key)[1:]
    assert info["attributes"].dump() == b"\xa0\x00"  # an empty [0] SET, as OpenSSL writes
    assert req["signature_algorithm"].dump() == SM3_WITH_SM2_ABSENT  # parameters absent
    # the signature is over the DER CertificationRequestInfo, with the standard ID
    assert sm2.verify(sm2.public_key_of(key), info.dump(), req["signature"].native)
    assert not sm2.verify(sm2.public_key_of(key), info.dump(), req["signature"].native, b"")
    # names in C, O, CN order; C printable, the rest UTF-8
    rdns = [rdn[0] for rdn in info["subject"].chosen]
    assert [a["type"].native for a in rdns] == ["country_name", "organization_name",
                                                "common_name"]
    assert [a["value"].name for a in rdns] == ["printable_string", "utf8_string",
                                               "utf8_string"]
    # one key and subject, one CertificationRequestInfo: only the signature differs
    again = asn1_csr.CertificationRequest.load(build_csr(key, SUBJECT))
    assert again["certification_request_info"].dump() == info.dump()


def _openssl_req_verify(path: Path, *extra: str) -> tuple[str, str]:
    """(stdout, stderr) of `openssl req -verify`; OpenSSL 3.0 exits 0 on a failed verify and
    says which on stderr."""
    res = subprocess.run(["openssl", "req", "-in", str(path), "-verify", "-noout", *extra],
                         capture_output=True, timeout=60, check=True)
    return res.stdout.decode(), res.stderr.decode()


def test_openssl_verifies_it_with_the_standard_id_only(key: int) -> None:
    path = workdir() / "built.csr"
    path.write_bytes(csr_pem(build_csr(key, SUBJECT)))
    text, said = _openssl_req_verify(path, "-vfyopt", STD_ID, "-text",
                                     "-nameopt", "utf8,sep_comma_plus")
    assert "self-signature verify OK" in said and "failure" not in said
    assert "ASN1 OID: SM2" in text and "SM2-with-SM3" in text
    assert f"Subject: C=CN,O={ORG},CN={ORG}" in text
    # OpenSSL 3.0's default (an empty ID) does not verify it: the standard ID was signed
    assert "self-signature verify failure" in _openssl_req_verify(path)[1]


def test_an_empty_id_request_is_the_finding_openssl_users_get(key: int) -> None:
    report = check_csr(build_csr(key, SUBJECT, uid=b""))
    assert not report.valid and report.codes == ["csr_wrong_sm2_id"]


def test_more_names_and_other_keys(key: int) -> None:
    other = sm2.generate_private_key()
    der = build_csr(other, {"c": "CN", "ST": "福建", "L": "厦门", "o": ORG, "OU": "信息部",
                            "CN": "server.ludao.example.cn",
                            "serialNumber": "91350206MA8DM00019"})
    report = check_csr(der)
    assert report.valid and report.public_key == sm2.public_key_of(other) != sm2.public_key_of(key)
    assert report.subject_fields == {"C": "CN", "ST": "福建", "L": "厦门", "O": ORG,
                                     "OU": "信息部", "CN": "server.ludao.example.cn",
                                     "serialNumber": "91350206MA8DM00019"}


@pytest.mark.parametrize(("private_key", "subject", "words"), [
    (1, {"C": "CN", "X": "?"}, "unknown subject attribute"),
    (1, {"C": "CN", "O": " "}, "empty subject attribute"),
    (0, SUBJECT, "not an SM2 private key"),
    (sm2.N - 1, SUBJECT, "not an SM2 private key"),
    ("12", SUBJECT, "not an SM2 private key"),
])
def test_what_cannot_be_a_request_is_refused_by_name(private_key: object, subject: dict[str, str],
                                                      words: str) -> None:
    with pytest.raises(RequestError, match=words) as err:
        build_csr(private_key, subject)  # type: ignore[arg-type]
    assert isinstance(err.value, PkiError) and isinstance(err.value, ValueError)
