"""PKI: certificates issued here (serial unique per issuer, revocation state), CRL numbers.

Revision ID: 0002_pki
Revises: 0001_intake
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_pki"
down_revision = "0001_intake"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pki_certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer_key_id", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("serial", sa.String(length=42), nullable=False),
        sa.Column("case_ref", sa.String(length=20), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("public_key", sa.String(length=130), nullable=False),
        sa.Column("approval_audit_id", sa.Integer(), nullable=True),
        sa.Column("approved_by", sa.String(length=200), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.String(length=40), nullable=True),
        sa.Column("revoked_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["approval_audit_id"], ["audit_log.id"],
                                name=op.f("fk_pki_certificates_approval_audit_id_audit_log")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pki_certificates")),
        sa.UniqueConstraint("issuer_key_id", "serial",
                            name=op.f("uq_pki_certificates_issuer_key_id_serial")),
    )
    op.create_index(op.f("ix_pki_certificates_case_ref"), "pki_certificates", ["case_ref"],
                    unique=False)
    op.create_index(op.f("ix_pki_certificates_public_key"), "pki_certificates", ["public_key"],
                    unique=False)
    op.create_table(
        "pki_crl_state",
        sa.Column("issuer_key_id", sa.String(length=64), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=True),
        sa.Column("der", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("issuer_key_id", name=op.f("pk_pki_crl_state")),
    )


def downgrade() -> None:
    op.drop_table("pki_crl_state")
    op.drop_index(op.f("ix_pki_certificates_public_key"), table_name="pki_certificates")
    op.drop_index(op.f("ix_pki_certificates_case_ref"), table_name="pki_certificates")
    op.drop_table("pki_certificates")
