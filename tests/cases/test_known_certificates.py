"""known_certificates: our certificates found by the subject's serialNumber or O (their own
columns) or by the fields of the case they were issued for, in one statement of fixed shape."""

from __future__ import annotations

from sqlalchemy import event, select
from sqlalchemy.engine.default import CACHE_HIT

from mailbot.cases.view import known_certificates
from mailbot.pki import sm2
from mailbot.pki.models import IssuedCertificate
from tests.cases.forms import ORG, ORG_CODE
from tests.support.cases import approved_case, issue_approved

pytest_plugins = ["tests.support.pki_issue_fixtures"]

OTHER = "厦门无关贸易有限公司"  # the name of the case a certificate was issued under
OTHER_CODE = "91350200MA2Y00001X"


def _issue(session, ca_state, ref: str, subject: dict[str, str]) -> str:
    """A pair under case `ref` (company OTHER, no form fields); the sign serial."""
    approved_case(session, ref, company=OTHER)
    pub = sm2.public_key_of(sm2.generate_private_key())
    pair = issue_approved(session, ca_state, ref, pub, subject)
    session.commit()
    return pair.sign_serial


def test_found_by_subject_serial_number_only(session, ca_state) -> None:
    serial = _issue(session, ca_state, "XM-2025-0950", {"O": "厦门旧名称有限公司",
                                                        "SERIALNUMBER": ORG_CODE})
    row = session.scalars(select(IssuedCertificate).filter_by(serial=serial)).one()
    assert (row.subject_org, row.subject_serial_number) == ("厦门旧名称有限公司", ORG_CODE)
    for given in (ORG_CODE, f" {ORG_CODE.lower()} "):  # as written, or once normalised
        [cert] = known_certificates(session, [given], []).for_case(given, None,
                                                                   kinds=("sign",))
        assert (cert.serial, cert.org_code, cert.organisation) == \
            (serial, ORG_CODE, "厦门旧名称有限公司")
    assert known_certificates(session, [OTHER_CODE], [ORG]).entries == []


def test_found_by_subject_organisation_only(session, ca_state) -> None:
    serial = _issue(session, ca_state, "XM-2025-0951", {"O": ORG})
    row = session.scalars(select(IssuedCertificate).filter_by(serial=serial)).one()
    assert (row.subject_org, row.subject_serial_number) == (ORG, None)
    for given in (ORG, f" “{ORG}” "):  # as written, or once normalised
        index = known_certificates(session, [], [given])
        assert sorted(c.kind for c in index.for_case(None, given)) == ["enc", "sign"]
        [cert] = index.for_case(None, given, kinds=("sign",))
        assert (cert.serial, cert.org_code, cert.organisation) == (serial, "", ORG)
    assert known_certificates(session, [ORG_CODE], ["厦门某某科技"]).entries == []


def test_one_statement_shape_whatever_the_number_of_codes(session, engine) -> None:
    """The lookup is compiled once: later calls, with more or fewer codes and names (or none
    of one kind), hit SQLAlchemy's statement cache with the same SQL."""
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "pki_certificates" in statement:
            seen.append((context.compiled.string, context.cache_hit))

    event.listen(engine, "before_cursor_execute", record)
    try:
        known_certificates(session, [ORG_CODE], [ORG])
        known_certificates(session, [f"9135020{n:011d}" for n in range(50)],
                           [f"公司{n}" for n in range(100)])
        known_certificates(session, [], [ORG, OTHER])
        known_certificates(session, [ORG_CODE, OTHER_CODE], [])
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(seen) == 4
    assert len({sql for sql, _ in seen}) == 1
    assert [hit for _, hit in seen[1:]] == [CACHE_HIT] * 3
