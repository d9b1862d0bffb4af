"""flask-smorest blueprints, one per resource."""

from api.resources import (
    admin,
    auth,
    events,
    health,
    jobs,
    notes,
    settings,
    spaces,
    stories,
    transcriptions,
)

# Registration order is the order of the OpenAPI document.
ALL = (health, auth, settings, spaces, notes, transcriptions, stories, jobs, events, admin)
