"""HTTP clients for a remote student: one small seam, two implementations.

``RemoteEngine`` posts JSON bytes and reads JSON bytes or SSE lines; nothing else. That
seam lets the transport be chosen on measurements: aiohttp (C-accelerated parser, a
light connection pool) costs a fraction of httpx's CPU per request on the gateway's hot
path (docs/benchmarks.md), so it is the default; httpx stays available. Transport
failures leave this module as ``EngineUnavailable`` / ``EngineTimeout`` only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx

from gateway.errors import EngineTimeout, EngineUnavailable

logger = logging.getLogger(__name__)

__all__ = [
    "AiohttpClient",
    "ClientOptions",
    "HttpxClient",
    "StreamedResponse",
    "UpstreamClient",
    "open_client",
]


@dataclass
class StreamedResponse:
    status: int
    lines: AsyncIterator[bytes]  # the body line by line (SSE), newlines stripped


@dataclass(frozen=True)
class ClientOptions:
    headers: Mapping[str, str]
    timeout_s: float
    connect_timeout_s: float
    max_connections: int


class UpstreamClient(Protocol):
    async def post(self, url: str, body: bytes) -> tuple[int, bytes]: ...

    def stream(
        self, url: str, body: bytes
    ) -> contextlib.AbstractAsyncContextManager[StreamedResponse]: ...

    async def get_status(self, url: str) -> int: ...

    async def aclose(self) -> None: ...


class HttpxClient:
    def __init__(self, options: ClientOptions) -> None:
        n = options.max_connections
        self._client = httpx.AsyncClient(
            headers=dict(options.headers),
            timeout=httpx.Timeout(options.timeout_s, connect=options.connect_timeout_s),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        )

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        with _translated(httpx.TimeoutException, httpx.TransportError):
            response = await self._client.post(url, content=body)
            return response.status_code, response.content

    @contextlib.asynccontextmanager
    async def stream(self, url: str, body: bytes) -> AsyncIterator[StreamedResponse]:
        with _translated(httpx.TimeoutException, httpx.TransportError):
            async with self._client.stream("POST", url, content=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    yield StreamedResponse(response.status_code, _one(response.content))
                else:
                    yield StreamedResponse(200, _lines_of(response.aiter_lines()))

    async def get_status(self, url: str) -> int:
        with _translated(httpx.TimeoutException, httpx.TransportError):
            return (await self._client.get(url)).status_code

    async def aclose(self) -> None:
        await self._client.aclose()


class AiohttpClient:
    """Created inside the running event loop (aiohttp binds its session to it)."""

    def __init__(self, options: ClientOptions) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._session = aiohttp.ClientSession(
            headers=dict(options.headers),
            connector=aiohttp.TCPConnector(
                limit=options.max_connections, limit_per_host=options.max_connections
            ),
            timeout=aiohttp.ClientTimeout(
                total=options.timeout_s, sock_connect=options.connect_timeout_s
            ),
            auto_decompress=False,
        )

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        with _translated(TimeoutError, self._aiohttp.ClientError):
            async with self._session.post(url, data=body) as response:
                return response.status, await response.read()

    @contextlib.asynccontextmanager
    async def stream(self, url: str, body: bytes) -> AsyncIterator[StreamedResponse]:
        with _translated(TimeoutError, self._aiohttp.ClientError):
            async with self._session.post(url, data=body) as response:
                if response.status != 200:
                    yield StreamedResponse(response.status, _one(await response.read()))
                else:
                    yield StreamedResponse(200, _stripped(response.content.__aiter__()))

    async def get_status(self, url: str) -> int:
        with _translated(TimeoutError, self._aiohttp.ClientError):
            async with self._session.get(url) as response:
                await response.read()
                return response.status

    async def aclose(self) -> None:
        await self._session.close()


def open_client(kind: Literal["aiohttp", "httpx"], options: ClientOptions) -> UpstreamClient:
    return AiohttpClient(options) if kind == "aiohttp" else HttpxClient(options)


@contextlib.contextmanager
def _translated(timeout: type[BaseException], transport: type[BaseException]) -> Iterator[None]:
    """Map a client library's failures onto the gateway's; the cause goes to the log only
    (it names internal hosts)."""
    try:
        yield
    except timeout:
        raise EngineTimeout("The student server did not answer in time.") from None
    except transport as exc:
        logger.warning("student server unreachable: %r", exc)
        raise EngineUnavailable("The student server could not be reached.") from None


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _lines_of(lines: AsyncIterator[str]) -> AsyncIterator[bytes]:
    async for line in lines:
        yield line.encode()


async def _stripped(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for line in lines:
        yield line.rstrip(b"\r\n")
