"""Batch regeneration of stories, for the admin role: create (or dry-run), follow, cancel, and
re-run the failed ones. The batch is a ``story_batch`` job; its children are ordinary story jobs
(``GET /jobs?parentId={id}``), each writing a new version of its space's story."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, jsonify
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import select

from api.auth import SECURITY, admin_required, current_user
from api.errors import error_responses
from api.schemas.base import camelcase
from api.schemas.batches import BatchEstimateSchema, BatchSchema, StoryRegenerationRequestSchema
from api.schemas.jobs import JobSchema
from api.state import db, state
from api.submit import SUBMIT_HEADERS, SUBMITTED, job_options, submit
from models import TERMINAL_STATUSES, Job
from workers.batch import (
    KIND,
    batch_report,
    cancel_batch,
    count_targets,
    create_batch,
    estimate_batch,
    frozen_selection,
    retry_failed,
)

blp = Blueprint("batches", __name__, url_prefix="/api/v1/batches",
                description="Batch regeneration of stories (admins)")

batch_schema = BatchSchema()
BATCH_CONTENT = {"application/json": {"schema": BatchSchema}}


def batch_or_404(batch_id: uuid.UUID) -> Job:
    batch = db().scalar(select(Job).where(Job.id == batch_id, Job.kind == KIND))
    if batch is None:
        abort(404, message="batch not found")
    assert batch is not None
    return batch


def batch_body(batch: Job) -> dict[str, Any]:
    base = f"/api/v1/batches/{batch.id}"
    return batch_schema.dump({
        "id": batch.id, "kind": batch.kind, "status": batch.status, "owner_id": batch.owner_id,
        "input": batch.input, "cancel_requested": batch.cancel_requested, "error": batch.error,
        "created_at": batch.created_at, "finished_at": batch.finished_at,
        **batch_report(db(), batch),
        "links": {"self": base, "cancel": f"{base}/cancel",
                  "retryFailed": f"{base}/retry-failed", "job": f"/api/v1/jobs/{batch.id}",
                  "children": f"/api/v1/jobs?parentId={batch.id}"},
    })


@blp.route("/story-regenerations")
class StoryRegenerations(MethodView):
    decorators = [admin_required]

    @blp.arguments(StoryRegenerationRequestSchema)
    @blp.doc(security=SECURITY, parameters=SUBMIT_HEADERS, responses={
        "202": SUBMITTED["202"],
        "200": {"description": "``dryRun``: the estimate, nothing created. Otherwise the batch "
                               "job, already finished (``Prefer: wait=N``, or a replay of its "
                               "Idempotency-Key).",
                "content": {"application/json": {"schema": {
                    "oneOf": [BatchEstimateSchema, JobSchema]}}}},
        **error_responses(400, 401, 403, 413, 422, 429)})
    def post(self, data: dict[str, Any]) -> Response:
        """Regenerate the stories of many spaces: a ``story_batch`` job (follow it at
        ``/batches/{id}``) whose children are story jobs on the ``batch`` queue."""
        user = current_user()
        selection = frozen_selection(data)
        overrides = {camelcase(k): v for k, v in (data.get("settings") or {}).items()}
        if data["dry_run"]:
            estimate = estimate_batch(db(), selection, overrides, state().settings.agents)
            return jsonify(BatchEstimateSchema().dump({
                "dry_run": True, "spaces": estimate.spaces, "story_calls": estimate.story_calls,
                "illustration_calls": estimate.illustration_calls,
                "gemini_calls": estimate.gemini_calls,
                "estimated_cost_usd": round(estimate.cost_usd, 4)}))
        # What the admin asked for (the frozen creation time aside): a retry replays the batch.
        request = {"selection": {k: v for k, v in selection.items() if k != "createdBefore"},
                   "settings": overrides, "force": data["force"]}
        options = job_options(data)
        if options.deadline_s is not None:
            # Its stories run for minutes each; a batch is stopped with /cancel instead.
            abort(422, message="a batch takes no deadline (Cancel-After): cancel it instead",
                  errors={"headers": {"Cancel-After": ["not accepted for a batch"]}})

        def create(key: str | None, request_hash: str) -> Job:
            targets = count_targets(db(), selection)
            if not targets:
                abort(422, message="no space with moments matches the selection")
            return create_batch(db(), owner_id=user.id, selection=selection,
                                overrides=overrides, force=data["force"], targets=targets,
                                idempotency_key=key, request_hash=request_hash,
                                **options.job_args())

        return submit(user.id, request, create, options=options)


@blp.route("/<uuid:batch_id>")
class BatchById(MethodView):
    decorators = [admin_required]

    @blp.doc(security=SECURITY, responses={
        "200": {"description": "The batch and its totals", "content": BATCH_CONTENT},
        **error_responses(401, 403, 404, 429)})
    def get(self, batch_id: uuid.UUID) -> Response:
        """Totals by status, progress, estimated time remaining and cost so far; the children
        are listed by ``GET /jobs?parentId={id}``."""
        return jsonify(batch_body(batch_or_404(batch_id)))


@blp.route("/<uuid:batch_id>/cancel")
class CancelBatch(MethodView):
    decorators = [admin_required]

    @blp.doc(security=SECURITY, responses={
        "200": {"description": "The batch, canceled or stopping", "content": BATCH_CONTENT},
        **error_responses(401, 403, 404, 429)})
    def post(self, batch_id: uuid.UUID) -> Response:
        """Stop the fan-out and cancel every unfinished child (running ones stop at their next
        safe point); finished stories stay."""
        batch = batch_or_404(batch_id)
        if batch.status not in TERMINAL_STATUSES:
            batch = cancel_batch(db(), batch)
        return jsonify(batch_body(batch))


@blp.route("/<uuid:batch_id>/retry-failed")
class RetryFailedBatch(MethodView):
    decorators = [admin_required]

    @blp.doc(security=SECURITY, responses={
        "200": {"description": "The batch, its failed children queued again",
                "content": BATCH_CONTENT},
        **error_responses(401, 403, 404, 409, 429)})
    def post(self, batch_id: uuid.UUID) -> Response:
        """Run the failed children again (succeeded ones are left alone); re-opens the batch
        if it had finished. 409 for a canceled batch."""
        batch = batch_or_404(batch_id)
        if batch.status == "canceled" or batch.cancel_requested:
            abort(409, message="the batch was canceled; start a new one instead")
        retry_failed(db(), batch)
        return jsonify(batch_body(batch))
