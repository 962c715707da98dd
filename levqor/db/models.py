"""Every package's tables, imported in one place for Alembic and the schema tests."""

from __future__ import annotations

from levqor.accounts import models as accounts_models
from levqor.audit import models as audit_models
from levqor.billing import models as billing_models
from levqor.compliance import models as compliance_models
from levqor.connectors import models as connectors_models
from levqor.db.base import Base
from levqor.idempotency import models as idempotency_models
from levqor.jobs import models as jobs_models
from levqor.ops import models as ops_models
from levqor.partners import models as partners_models
from levqor.web import models as web_models
from levqor.workflows import models as workflows_models

metadata = Base.metadata

__all__ = [
    "accounts_models",
    "audit_models",
    "billing_models",
    "compliance_models",
    "connectors_models",
    "idempotency_models",
    "jobs_models",
    "metadata",
    "ops_models",
    "partners_models",
    "web_models",
    "workflows_models",
]
