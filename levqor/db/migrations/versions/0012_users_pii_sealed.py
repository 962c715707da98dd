"""accounts: e-mail and name encrypted at rest, e-mail found by a blind index.

Existing rows are encrypted here with the key ring and blind-index key of the settings
the migration runs with (`levqor migrate` loads them like every command).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from __future__ import annotations

import hashlib
import hmac

import sqlalchemy as sa
from alembic import op
from cryptography.fernet import Fernet, MultiFernet

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

users = sa.table(
    "users",
    sa.column("id", sa.String()),
    sa.column("email", sa.String()),
    sa.column("name", sa.String()),
    sa.column("email_encrypted", sa.Text()),
    sa.column("email_index", sa.String()),
    sa.column("name_encrypted", sa.Text()),
)


def _keys() -> tuple[MultiFernet, str]:
    config = op.get_context().config
    settings = config.attributes.get("settings") if config is not None else None
    if settings is None or not settings.encryption_keys or settings.blind_index_key is None:
        raise RuntimeError("run this migration with `levqor migrate` (it needs the keys)")
    ring = MultiFernet([Fernet(key.get_secret_value()) for key in settings.encryption_keys])
    return ring, settings.blind_index_key.get_secret_value()


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("email_index", sa.String(64), nullable=True))
        batch.add_column(sa.Column("name_encrypted", sa.Text(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(users.c.id, users.c.email, users.c.name)).all()
    if rows:
        ring, index_key = _keys()
        for user_id, email, name in rows:
            address = email.strip().lower()
            bind.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(
                    email_encrypted=ring.encrypt(email.encode()).decode(),
                    email_index=hmac.new(
                        index_key.encode(), address.encode(), hashlib.sha256
                    ).hexdigest(),
                    name_encrypted=ring.encrypt(name.encode()).decode() if name else None,
                )
            )
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_email", type_="unique")
        batch.drop_column("email")
        batch.drop_column("name")
        batch.alter_column("email_encrypted", existing_type=sa.Text(), nullable=False)
        batch.alter_column("email_index", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_users_email_index", ["email_index"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email", sa.String(320), nullable=True))
        batch.add_column(sa.Column("name", sa.String(200), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(users.c.id, users.c.email_encrypted, users.c.name_encrypted)
    ).all()
    if rows:
        ring, _ = _keys()
        for user_id, email, name in rows:
            bind.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(
                    email=ring.decrypt(email.encode()).decode(),
                    name=ring.decrypt(name.encode()).decode() if name else None,
                )
            )
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_email_index", type_="unique")
        batch.drop_column("email_index")
        batch.drop_column("email_encrypted")
        batch.drop_column("name_encrypted")
        batch.alter_column("email", existing_type=sa.String(320), nullable=False)
        batch.create_unique_constraint("uq_users_email", ["email"])
