"""flask-smorest blueprints, one per resource."""

from api.resources import (
    admin,
    auth,
    batches,
    events,
    films,
    health,
    jobs,
    narrations,
    narrator_clips,
    notes,
    settings,
    spaces,
    stories,
    transcriptions,
    webhooks,
)

# Registration order is the order of the OpenAPI document.
ALL = (health, auth, settings, spaces, notes, transcriptions, stories, films, narrations,
       narrator_clips, jobs,
       events, admin, batches, webhooks)
