"""Answering a request whose body was not read, without breaking the client's connection.

A view that refuses early (413 too large, 409 wrong offset, 401, 404, 429) leaves the body
on the socket. Before a kept-alive connection can carry the next request, the server must
skip those bytes, and WSGI forbids an application to say ``Connection: close`` itself
(PEP 3333: hop-by-hop headers belong to the server). Django's own server skips the whole
rest; gunicorn's threaded worker skips 64 KiB at most, and past that closes the connection
after having answered ``Connection: keep-alive``, so the client's next request on it gets no
answer at all. :func:`request_body_discard` reads the rest of the body and throws it away,
up to a bound, before the answer goes out: the connection then stays usable everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, UnreadablePostError
from django.http.response import HttpResponseBase

log = logging.getLogger(__name__)

# The most a refused request's body is read to keep its connection open: larger than any
# chunk a well-behaved client sends in one request. Past it the server closes the connection.
DISCARD_LIMIT_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


def request_body_discard(request: HttpRequest, *, limit: int = DISCARD_LIMIT_BYTES) -> bool:
    """Read and drop what is left of ``request``'s body, up to ``limit`` bytes.

    Returns whether the body is now read to its end. Bytes a view already read are not read
    again (a body buffered by ``request.body`` is only read from memory).
    """
    discarded = 0
    try:
        while discarded <= limit:
            chunk = request.read(min(_CHUNK, limit + 1 - discarded))
            if not chunk:
                return True
            discarded += len(chunk)
    except (OSError, UnreadablePostError):  # the client went away: nothing left to keep
        return False
    log.info("left an unread body of more than %s bytes: the server will close", limit)
    return False


class UnreadBodyMiddleware:
    """:func:`request_body_discard` after every view, for every route: a JSON body refused
    as too large (413), a POST answered 401 or 429 before it was parsed. Put it first in
    ``MIDDLEWARE`` so that it also sees answers made by the middleware below it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        request_body_discard(request)
        return response
