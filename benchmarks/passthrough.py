"""The bare peers: a FastAPI app that forwards the request body to the upstream and returns
its answer, nothing else. ``--client`` picks the upstream HTTP client (httpx or aiohttp),
one shared pooled client, created in the lifespan.

    python -m benchmarks.passthrough --client httpx --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response


def create_app(client: str, upstream: str) -> FastAPI:
    url = upstream.rstrip("/") + "/v1/chat/completions"
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if client == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
            async with httpx.AsyncClient(limits=limits, timeout=30) as c:
                state["client"] = c
                yield
        else:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=256)
            async with aiohttp.ClientSession(connector=connector) as s:
                state["client"] = s
                yield

    app = FastAPI(lifespan=lifespan)
    headers = {"content-type": "application/json"}

    if client == "httpx":

        @app.post("/v1/chat/completions")
        async def forward_httpx(request: Request) -> Response:
            r = await state["client"].post(url, content=await request.body(), headers=headers)
            return Response(r.content, r.status_code, media_type="application/json")

    else:

        @app.post("/v1/chat/completions")
        async def forward_aiohttp(request: Request) -> Response:
            async with state["client"].post(url, data=await request.body(), headers=headers) as r:
                return Response(await r.read(), r.status, media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=["httpx", "aiohttp"], default="httpx")
    parser.add_argument("--upstream", default="http://127.0.0.1:9000")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.client, args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
