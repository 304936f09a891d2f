"""Migration 0007: the subject's O and serialNumber columns of pki_certificates, filled for
the certificates already there from their DER (SQLite and, when configured, PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

from asn1crypto import x509
from sqlalchemy import inspect, text

from mailbot.db import downgrade, make_engine, upgrade
from mailbot.pki import sm2
from mailbot.pki.ca import sig_alg
from mailbot.pki.issue import build_tbs, subject_fields, subject_name
from tests.cases.forms import ORG, ORG_CODE

pytest_plugins = ["tests.support.pki_issue_fixtures"]

T0, T1 = datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)


def _der(ca_state, serial: int, subject: dict[str, str]) -> bytes:
    """A certificate as our CA writes it (the backfill reads its subject, not its signature)."""
    tbs = build_tbs(ca_state, kind="sign", subject=subject_name(subject_fields(subject)),
                    public_key=sm2.public_key_of(sm2.generate_private_key()), serial=serial,
                    not_before=T0, not_after=T1, crl_url="")
    return x509.Certificate({"tbs_certificate": tbs, "signature_algorithm": sig_alg(),
                             "signature_value": b"\x00" * 8}).dump()


def test_0007_fills_the_subject_columns_of_existing_certificates(db_url, ca_state) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine=engine, revision="0006_outbox")
        rows = {"a1": _der(ca_state, 0xA1, {"O": ORG, "SERIALNUMBER": ORG_CODE}),
                "a2": _der(ca_state, 0xA2, {"O": ORG}),
                "a3": _der(ca_state, 0xA3, {"CN": "alice"}),
                "a4": b"not a certificate"}
        with engine.begin() as conn:
            for serial, der in rows.items():
                conn.execute(text(
                    "INSERT INTO pki_certificates (issuer_key_id, issuer, serial, kind, subject, "
                    "not_before, not_after, der, public_key, issued_at) VALUES ('ab', 'CN=CA', "
                    ":serial, 'sign', 'x', :t0, :t1, :der, :pk, :t0)"),
                    {"serial": serial, "t0": T0, "t1": T1, "der": der, "pk": serial})
        upgrade(engine=engine)
        with engine.connect() as conn:
            got = {serial: (org, code) for serial, org, code in conn.execute(text(
                "SELECT serial, subject_org, subject_serial_number FROM pki_certificates"))}
        assert got == {"a1": (ORG, ORG_CODE), "a2": (ORG, None), "a3": (None, None),
                       "a4": (None, None)}
        indexes = {i["name"] for i in inspect(engine).get_indexes("pki_certificates")}
        assert {"ix_pki_certificates_subject_org",
                "ix_pki_certificates_subject_serial_number"} <= indexes

        downgrade(engine, "0006_outbox")
        engine.dispose()  # SQLite's batch mode copied the table: fresh reflection
        columns = {c["name"] for c in inspect(engine).get_columns("pki_certificates")}
        assert "subject_org" not in columns and "subject_serial_number" not in columns
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pki_certificates")).scalar() == 4
    finally:
        engine.dispose()
