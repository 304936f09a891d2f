"""The request's subject names read back from the subject string a recorded case keeps
(mailbot.rules.view.dn_fields): the same names the CSR check found in the request itself."""

from __future__ import annotations

import pytest

from mailbot.pki import der, sm2
from mailbot.pki.csr import CsrReport, check_csr
from mailbot.rules.view import CaseView, dn_fields
from tests.support.pki_csr import info, name, request

UTF8 = der.UTF8_STRING
CN, ORG, OU, C = "2.5.4.3", "2.5.4.10", "2.5.4.11", "2.5.4.6"


def _report(*rdns: tuple[str, str, int]) -> CsrReport:
    d = sm2.generate_private_key()
    report = check_csr(request(d, info(sm2.public_key_of(d), subject=name(*rdns))))
    assert report.valid, report.findings
    return report


@pytest.mark.parametrize("rdns", [
    [(C, "CN", der.PRINTABLE_STRING), (ORG, "厦门云帆网络科技有限公司", UTF8),
     (CN, "厦门云帆网络科技有限公司", UTF8)],
    [(ORG, "Yunfan, Ltd.", UTF8), (CN, "a+b=c \"q\" <x> ;\\", UTF8)],  # every escaped character
    [(ORG, " leading and trailing ", UTF8), (CN, "#hash", UTF8)],
    [(OU, "IT", UTF8), (OU, "Ops", UTF8), (CN, "server.yunfan.cn", UTF8)],  # a name twice
    [(ORG, "厦门 云帆", der.BMP_STRING)],
])
def test_dn_fields_reads_back_what_the_check_found(rdns) -> None:
    report = _report(*rdns)
    assert dn_fields(report.subject) == report.subject_fields


def test_dn_fields_of_nothing_and_of_hex_escapes() -> None:
    assert dn_fields("") == {} and dn_fields("  ") == {}
    assert dn_fields("CN=\\E5\\8E\\A6\\E9\\97\\A8,C=CN") == {"C": "CN", "CN": "厦门"}
    assert dn_fields("CN=a+O=b,junk") == {"CN": "a", "O": "b"}


def test_request_names_prefer_the_kept_names() -> None:
    report = CsrReport(subject_fields={"CN": "from the report"})
    assert CaseView(csr=report).request_names == {"CN": "from the report"}
    assert CaseView(csr=report, csr_subject={"CN": "kept"}).request_names == {"CN": "kept"}
    assert CaseView().request_names == {}
