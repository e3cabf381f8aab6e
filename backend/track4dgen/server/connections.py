"""Connection limits for ``track4dgen serve``: a header deadline and per-address / total caps.

Why: uvicorn's h11 protocol times out idle keep-alive connections but never a connection that
opens and then sends its request headers slowly or not at all (Slowloris). 1,100 such connections
exhausted the server's file descriptors, so health checks and submits timed out. This protocol:

* gives every request ``header_timeout_s`` from its first byte (or from the connection's start)
  to finish its headers; the deadline is absolute, so trickling one byte at a time does not extend it;
* answers 503 and closes at once when one client address already holds ``max_per_ip`` connections
  or the server holds ``max_total`` (kept below the file-descriptor limit).

Behind a reverse proxy every connection comes from the proxy's address: set ``max_per_ip`` to 0
there and let the proxy apply per-client limits (README, "Public exposure").
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol

_BODY = b'{"error": "too_many_connections", "message": "too many open connections", "hint": "Retry in a moment."}'
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(_BODY)) + _BODY


@dataclass
class ConnectionLimits:
    header_timeout_s: float = 10.0
    max_per_ip: int = 64  # 0 = no per-address cap (behind a reverse proxy)
    max_total: int = 900


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """An H11Protocol class that applies ``limits`` (one counter per server)."""
    per_ip: Counter[str] = Counter()

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _ip: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._ip = self.client[0] if self.client else ""
            per_ip[self._ip] += 1
            if (limits.max_per_ip and per_ip[self._ip] > limits.max_per_ip) or len(self.connections) > limits.max_total:
                transport.write(_REFUSED)
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._ip is not None:
                per_ip[self._ip] -= 1
                if per_ip[self._ip] <= 0:
                    del per_ip[self._ip]
                self._ip = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # headers are complete: the request is being handled
            else:
                self._arm()  # waiting for (the rest of) a request's headers

        def _arm(self) -> None:
            if self._deadline is None and limits.header_timeout_s > 0:
                self._deadline = self.loop.call_later(limits.header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

    return GuardedH11Protocol
