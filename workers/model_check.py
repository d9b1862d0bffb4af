"""At worker start-up, ask the Gemini API about every configured model once, so a retired one
is an error in the logs before the first job pays for it."""

from __future__ import annotations

import logging
import threading

from agents.config import AgentSettings
from agents.gemini import check_routes

log = logging.getLogger(__name__)


def check_models_at_start(settings: AgentSettings) -> threading.Thread | None:
    """Check in a background thread (start-up never waits on Google); None when offline."""
    if not settings.has_api_key:
        return None
    thread = threading.Thread(target=log_model_checks, args=(settings,), name="model-check",
                              daemon=True)
    thread.start()
    return thread


def log_model_checks(settings: AgentSettings) -> None:
    """One ``models.get`` per configured model; a missing one is logged as an error."""
    for status in check_routes(settings):
        route = status.route
        for check in status.checks:
            if check is not None and check.found is False:
                log.error("configured model not found", extra={
                    "agent": route.agent, "model": check.model, "setting": route.setting,
                    "fallback": check.model != route.model, "detail": check.detail,
                })
        fields = {"agent": route.agent, "model": route.model, "state": status.state,
                  "answering": status.answering}
        if status.state == "unavailable":
            log.error("agent has no working model", extra=fields)
        elif status.state == "unknown":
            log.warning("models could not be checked", extra=fields)
        else:
            log.info("model check", extra=fields)
