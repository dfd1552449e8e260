"""ledger rows reference their company and its tenant with one key

The ledger's two foreign keys (to the tenant and to the company) become one, on (tenant_id, company_id) against
company (tenant_id, id): a ledger row's tenant is now the company's own, and each row inserted costs one key check
instead of two. A tenant deleted still takes its companies, and with them their ledgers, along.

Revision ID: 8c1d2e7f4a90
Revises: 3824354691a8
Create Date: 2026-12-01 14:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "8c1d2e7f4a90"
down_revision: str | None = "3824354691a8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("company") as batch:
        batch.create_unique_constraint("uq_company_tenant_id_id", ["tenant_id", "id"])
    with op.batch_alter_table("license_change") as batch:
        batch.drop_constraint("fk_license_change_tenant_id_tenant", type_="foreignkey")
        batch.drop_constraint("fk_license_change_company_id_company", type_="foreignkey")
        batch.create_foreign_key(
            "fk_license_change_tenant_id_company",
            "company",
            ["tenant_id", "company_id"],
            ["tenant_id", "id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("license_change") as batch:
        batch.drop_constraint("fk_license_change_tenant_id_company", type_="foreignkey")
        batch.create_foreign_key(
            "fk_license_change_company_id_company", "company", ["company_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_foreign_key(
            "fk_license_change_tenant_id_tenant", "tenant", ["tenant_id"], ["id"], ondelete="CASCADE"
        )
    with op.batch_alter_table("company") as batch:
        batch.drop_constraint("uq_company_tenant_id_id", type_="unique")
