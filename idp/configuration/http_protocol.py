"""The HTTP/1.1 protocol `idp serve` runs: uvicorn's httptools parser (C, several times faster
than h11 in Python) with the guarantee h11 gave: a request head is buffered only up to a bound.

httptools itself accumulates a header of any size until it ends, so the bytes of a request
head are counted here, before the parser sees them, and past the bound the connection is
answered 431 and closed. The bound is uvicorn's `h11_max_incomplete_event_size`, which `idp
serve` sets to twice IDP_MAX_HEADER_SIZE; heads between the two get the app's own 431.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

DEFAULT_MAX_HEAD: Final = 16 * 1024  # h11's own default
_BODY: Final = b'{"detail":"request header fields too large"}'
HEAD_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode("ascii") + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with a bound on the bytes of a request head it buffers.

    Bytes are fed to the parser at most up to the bound while a head is incomplete; a head
    that reaches it is refused. A chunk that ends one message and starts the next is counted
    towards the earlier one, so a head may be read up to twice the bound, never more.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD
        self.in_head = True  # no request yet, or the last one's body has ended
        self.head_bytes = 0

    def data_received(self, data: bytes) -> None:
        while self.in_head and data:
            if self.transport.is_closing():
                return
            room = self.max_head - self.head_bytes
            if room <= 0:
                self.transport.write(HEAD_TOO_LARGE)
                self.transport.close()
                return
            piece, data = data[:room], data[room:]
            self.head_bytes += len(piece)
            super().data_received(piece)
        if data and not self.transport.is_closing():
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_head = True
        self.head_bytes = 0
        super().on_message_complete()
