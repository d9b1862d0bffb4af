"""Jobs: list, poll (with ETag), cancel."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint, Page
from sqlalchemy import func, select

from api.auth import (
    ADMIN_ROLE,
    SECURITY,
    current_user,
    current_user_id,
    login_required,
    token_required,
)
from api.errors import error_responses
from api.ownership import owned_job
from api.schemas.jobs import JobQuerySchema, JobSchema
from api.state import db, state
from api.submit import job_response, retry_after_s
from models import TERMINAL_STATUSES, Job
from workers.job_mirror import Entry
from workers.job_resource import render_job
from workers.parents import cancel_job

blp = Blueprint("jobs", __name__, url_prefix="/api/v1", description="Jobs")

IF_NONE_MATCH = {"in": "header", "name": "If-None-Match", "required": False,
                 "description": "The ETag of the job as last seen: 304 while it is unchanged.",
                 "schema": {"type": "string"}}


class SelectPage(Page):
    """Pages a SQLAlchemy select in the database (count + offset/limit), not in Python."""

    @property
    def items(self) -> list[Any]:
        params = self.page_params
        if params.first_item >= (params.item_count or 0):
            # Past the last page; also never an OFFSET too large for PostgreSQL's bigint.
            return []
        return list(db().scalars(self.collection.offset(params.first_item).limit(params.page_size)))

    @property
    def item_count(self) -> int:
        counted = select(func.count()).select_from(self.collection.order_by(None).subquery())
        return db().scalar(counted) or 0


@blp.route("/jobs")
class Jobs(MethodView):
    decorators = [login_required]

    @blp.arguments(JobQuerySchema, location="query")
    @blp.response(200, JobSchema(many=True))
    @blp.paginate(SelectPage)
    @blp.doc(security=SECURITY, responses=error_responses(401, 429))
    def get(self, query: dict[str, Any]) -> Any:
        """The user's jobs, newest first; filter by ``kind``, ``status``, ``parentId``. With
        ``parentId`` an admin sees every child (a batch's stories belong to the spaces' owners)."""
        user = current_user()
        stmt = select(Job)
        if "parent_id" not in query or user.role != ADMIN_ROLE:
            stmt = stmt.where(Job.owner_id == user.id)
        for name, column in (("kind", Job.kind), ("status", Job.status),
                             ("parent_id", Job.parent_id)):
            if name in query:
                stmt = stmt.where(column == query[name])
        return stmt.order_by(Job.created_at.desc(), Job.id)


def if_none_match() -> frozenset[str] | None:
    """The ETags of the request's ``If-None-Match`` (``*`` for any), None without one."""
    if "If-None-Match" not in request.headers:
        return None
    sent = request.if_none_match
    return frozenset(sent.as_set()) | ({"*"} if sent.star_tag else set())


def polled_job(job_id: uuid.UUID, etags: frozenset[str] | None) -> Entry:
    """The job's document as a poll answers it: from Redis (one lookup, no document read when
    ``etags`` holds its ETag), else rendered from the database (404 if not the user's) and
    put back in Redis for the next poll. Either way the same bytes."""
    mirror = state().mirror
    entry = mirror.lookup(job_id, etags) if mirror is not None else None
    if entry is not None and entry.owner_id == str(current_user_id()):
        return entry
    document = render_job(db(), owned_job(job_id))
    if mirror is not None:
        mirror.write(document)
    matched = etags is not None and ("*" in etags or document.etag in etags)
    return Entry(str(document.owner_id), document.status, document.etag,
                 None if matched else document.body)


@blp.route("/jobs/<uuid:job_id>")
class JobById(MethodView):
    decorators = [token_required]
    rate_limit_group = "polling"

    @blp.doc(security=SECURITY, parameters=[IF_NONE_MATCH], responses={
        "200": {"description": "The job", "content": {"application/json": {"schema": JobSchema}},
                "headers": {"ETag": {"required": True, "schema": {"type": "string"}}}},
        "304": {"description": "Unchanged since the ETag sent in If-None-Match"},
        **error_responses(401, 404, 429)})
    def get(self, job_id: uuid.UUID) -> Response:
        """The job; send ``If-None-Match`` with its ETag to get 304 while it is unchanged."""
        entry = polled_job(job_id, if_none_match())
        if entry.body is None:
            response = Response(status=304)
        else:
            response = Response(entry.body, mimetype="application/json")
        response.set_etag(entry.etag)
        response.headers["Cache-Control"] = "no-cache"
        if not entry.finished:
            response.headers["Retry-After"] = str(retry_after_s(entry.status))
        return response


@blp.route("/jobs/<uuid:job_id>/cancel")
class CancelJob(MethodView):
    decorators = [login_required]

    @blp.doc(security=SECURITY, responses={
        "200": {"description": "The job, canceled or stopping",
                "content": {"application/json": {"schema": JobSchema}}},
        **error_responses(401, 404, 429)})
    def post(self, job_id: uuid.UUID) -> Response:
        """Cancel a queued job now, or ask a running one to stop at its next safe point."""
        job = owned_job(job_id)
        if job.status not in TERMINAL_STATUSES:
            job = cancel_job(db(), job)
        response = job_response(job)
        response.status_code = 200
        return response
