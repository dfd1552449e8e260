"""`GET /api/v1/webhook-deliveries/{webhook_id}`: a stored delivery and its outcome once applied."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.deps import PrincipalDep, SessionDep
from app.api.problems import error_responses
from app.errors import NotAuthenticatedError, NotFoundError
from app.schemas.webhooks import DeliveryRead
from app.services.deliveries import get_delivery

router = APIRouter(prefix="/api/v1", tags=["webhooks"])


@router.get(
    "/webhook-deliveries/{webhook_id}",
    response_model=DeliveryRead,
    summary="A webhook delivery of the last 8 days and its outcome once applied",
    responses=error_responses(NotAuthenticatedError, NotFoundError),
)
async def read_delivery(
    webhook_id: Annotated[str, Path(min_length=1, max_length=200)], principal: PrincipalDep, session: SessionDep
) -> DeliveryRead:
    """What became of a webhook delivery: stored (`pending`) or `applied`, with its outcome (applied, duplicate,
    conflict, unknown company, …) and detail. Deliveries are kept 8 days."""
    return await get_delivery(session, tenant_id=principal.tenant_id, webhook_id=webhook_id)
