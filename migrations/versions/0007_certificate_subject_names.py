"""The subject's O and serialNumber of each certificate in columns of their own (indexed), so
certificates are looked up by organisation name or code without reading every subject.

Existing rows are filled from their DER; a row whose DER cannot be read keeps NULL.

Revision ID: 0007_certificate_subject_names
Revises: 0006_outbox
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_certificate_subject_names"
down_revision = "0006_outbox"
branch_labels = None
depends_on = None

ORG_MAX, SERIAL_MAX = 400, 64
BATCH = 500

_certificates = sa.table(
    "pki_certificates",
    sa.column("id", sa.Integer()),
    sa.column("der", sa.LargeBinary()),
    sa.column("subject_org", sa.String()),
    sa.column("subject_serial_number", sa.String()),
)


def _subject_names(der: bytes) -> tuple[str | None, str | None]:
    """(O, serialNumber) of the certificate's subject, the first of each, as written; None
    when absent, unreadable or longer than the column (as mailbot.pki.models.subject_names,
    frozen here as of this revision)."""
    from asn1crypto import x509

    found: dict[str, object] = {}
    try:
        for rdn in x509.Certificate.load(bytes(der))["tbs_certificate"]["subject"].chosen:
            for atv in rdn:
                key = atv["type"].native
                if key in ("organization_name", "serial_number") and key not in found:
                    found[key] = atv["value"].native
    except Exception:  # noqa: BLE001 - unreadable DER: the row keeps NULL
        return None, None
    org, code = found.get("organization_name"), found.get("serial_number")
    return (org if isinstance(org, str) and 0 < len(org) <= ORG_MAX else None,
            code if isinstance(code, str) and 0 < len(code) <= SERIAL_MAX else None)


def _backfill() -> None:
    conn = op.get_bind()
    update = (_certificates.update()
              .where(_certificates.c.id == sa.bindparam("row_id"))
              .values(subject_org=sa.bindparam("org"),
                      subject_serial_number=sa.bindparam("code")))
    last = 0
    while True:
        rows = conn.execute(
            sa.select(_certificates.c.id, _certificates.c.der)
            .where(_certificates.c.id > last).order_by(_certificates.c.id).limit(BATCH)).all()
        if not rows:
            return
        last = rows[-1].id
        values = []
        for row_id, der in rows:
            org, code = _subject_names(der)
            if org is not None or code is not None:
                values.append({"row_id": row_id, "org": org, "code": code})
        if values:
            conn.execute(update, values)


def upgrade() -> None:
    with op.batch_alter_table("pki_certificates") as batch:
        batch.add_column(sa.Column("subject_org", sa.String(length=ORG_MAX), nullable=True))
        batch.add_column(sa.Column("subject_serial_number", sa.String(length=SERIAL_MAX),
                                   nullable=True))
    op.create_index(op.f("ix_pki_certificates_subject_org"), "pki_certificates",
                    ["subject_org"], unique=False)
    op.create_index(op.f("ix_pki_certificates_subject_serial_number"), "pki_certificates",
                    ["subject_serial_number"], unique=False)
    _backfill()


def downgrade() -> None:
    op.drop_index(op.f("ix_pki_certificates_subject_serial_number"),
                  table_name="pki_certificates")
    op.drop_index(op.f("ix_pki_certificates_subject_org"), table_name="pki_certificates")
    with op.batch_alter_table("pki_certificates") as batch:
        batch.drop_column("subject_serial_number")
        batch.drop_column("subject_org")
