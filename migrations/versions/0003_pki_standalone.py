"""PKI stands alone: no foreign key from pki_certificates to audit_log; one pair per approval.

Revision ID: 0003_pki_standalone
Revises: 0002_pki
"""

from alembic import op

revision = "0003_pki_standalone"
down_revision = "0002_pki"
branch_labels = None
depends_on = None

FK = "fk_pki_certificates_approval_audit_id_audit_log"
UQ = "uq_pki_certificates_approval_audit_id_kind"


def upgrade() -> None:
    # batch mode: SQLite cannot drop a constraint in place, so the table is copied
    with op.batch_alter_table("pki_certificates") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        batch.create_unique_constraint(UQ, ["approval_audit_id", "kind"])


def downgrade() -> None:
    with op.batch_alter_table("pki_certificates") as batch:
        batch.drop_constraint(UQ, type_="unique")
        batch.create_foreign_key(FK, "audit_log", ["approval_audit_id"], ["id"])
