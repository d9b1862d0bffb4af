"""Operations across users, for the admin role only (``lifetales users promote EMAIL``)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from api.auth import SECURITY, admin_required
from api.errors import error_responses
from api.resources.jobs import SelectPage
from api.schemas.jobs import AdminJobQuerySchema, AdminJobSchema
from models import Job

blp = Blueprint("admin", __name__, url_prefix="/api/v1/admin", description="Operations (admins)")


@blp.route("/jobs")
class AdminJobs(MethodView):
    decorators = [admin_required]

    @blp.arguments(AdminJobQuerySchema, location="query")
    @blp.response(200, AdminJobSchema(many=True))
    @blp.paginate(SelectPage)
    @blp.doc(security=SECURITY, responses=error_responses(401, 403, 429))
    def get(self, query: dict[str, Any]) -> Any:
        """Every user's jobs, newest first; filter by ``status``, ``kind``, ``userId``,
        ``parentId``."""
        stmt = select(Job)
        for name, column in (("kind", Job.kind), ("status", Job.status),
                             ("user_id", Job.owner_id), ("parent_id", Job.parent_id)):
            if name in query:
                stmt = stmt.where(column == query[name])
        return stmt.order_by(Job.created_at.desc(), Job.id)
