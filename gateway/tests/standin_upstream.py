"""A stand-in model server for gateway tests: answers every path with who it is.

`python standin_upstream.py PORT REVISION REPLICA` serves HTTP/1.1 (and websockets on /ws) on
127.0.0.1:PORT. It stands in for the eas model servers and dsw notebooks that later issues run;
the gateway and Envoy in front of it are real.
"""

from __future__ import annotations

import sys

from aiohttp import WSMsgType, web


def main() -> None:
    port, revision, replica = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ready")

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.headers.get("upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(f"{revision}:{msg.data}")
            return ws
        body = await request.read()
        return web.json_response(
            {
                "revision": revision,
                "replica": replica,
                "path": request.path,
                "bytes": len(body),
                "authorization": request.headers.get("authorization", ""),
                "api_key": request.headers.get("x-api-key", ""),
            }
        )

    app = web.Application(client_max_size=64 << 20)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
