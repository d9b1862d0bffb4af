"""Request bodies over the size cap get a 413 the client can read.

A client that writes its whole body before reading the answer (Python's ``http.client``, some
mobile stacks) sees a broken pipe, not the 413, when the server closes the connection on an
unread body. So the rest of an over-cap body is read and thrown away before the 413 goes out,
up to a bound (in bytes and in time); past it the connection closes as before. In production
a reverse proxy's body limit (nginx ``client_max_body_size 28m``) refuses such bodies first.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from flask import Flask, abort, current_app, request
from werkzeug.wsgi import LimitedStream

log = logging.getLogger(__name__)

# Base64 audio of the 20 MB limit plus JSON framing; larger bodies answer 413 before parsing.
MAX_CONTENT_LENGTH = 28 * 1024 * 1024
# Up to this much of an over-cap body (in all) is read and discarded so its 413 can be read.
DISCARD_UP_TO = 64 * 1024 * 1024
DISCARD_SECONDS = 30.0
_CHUNK = 256 * 1024


def init_body_limit(app: Flask) -> None:
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.before_request(_refuse_over_cap)


def _refuse_over_cap() -> None:
    """413 for a body over the cap, once the rest of it is read and discarded (up to a bound).

    A declared length says it before anything is read. A chunked body is read now, up to the
    cap, as the view would read it (the view then gets it from the request's cache): werkzeug
    stops reading at the cap without a word, and the view would see a truncated body."""
    cap = current_app.config["MAX_CONTENT_LENGTH"]
    declared = request.content_length
    raw = request.environ["wsgi.input"]
    if declared is None:
        if not request.environ.get("wsgi.input_terminated"):
            return  # no way to tell where it ends: werkzeug reads none of it
        request.get_data(cache=True)
        if not getattr(request.stream, "is_exhausted", False) or not raw.read(1):
            return
        read_to_end = discard(raw)
    elif declared <= cap:
        return
    else:
        read_to_end = declared <= DISCARD_UP_TO and discard(LimitedStream(raw, declared))
    if not read_to_end:
        log.info("over-cap body not read to its end: the connection closes",
                 extra={"content_length": declared})
    abort(413)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def discard(stream: Readable) -> bool:
    """Read and drop what is left of a body, up to ``DISCARD_UP_TO`` bytes and
    ``DISCARD_SECONDS``; True when it was read to its end."""
    deadline = time.monotonic() + DISCARD_SECONDS
    read = 0
    while read <= DISCARD_UP_TO and time.monotonic() < deadline:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return True
        read += len(chunk)
    return False
