"""Connections: a request's line and headers must arrive within a deadline.

uvicorn closes a kept-alive connection that stays idle (``timeout_keep_alive``), but a
client that connects and then sends its headers a byte at a time, or nothing at all, is
never timed out: each byte cancels the keep-alive timer. This protocol arms a timer when
a connection opens and again whenever a new request begins, and closes the connection if
the headers are not complete when it fires. The body's own deadline is the app's
(uploads.receive), which can answer 408 in JSON.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's line and headers."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _waiting_for_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_headers():
            self._arm()  # the first bytes of a next request on a kept-alive connection
        super().data_received(data)
        if not self._waiting_for_headers():
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            self.transport.close()


def protocol(header_timeout_s: float) -> type[HeaderDeadline]:
    """The protocol class for uvicorn's ``http=`` with this deadline."""
    return type("HeaderDeadline", (HeaderDeadline,), {"header_timeout_s": header_timeout_s})
