#!/usr/bin/env python3
"""Checks Confab's TURN credentials against a real TURN server (coturn with use-auth-secret):
the credentials Confab hands a participant in `joined` allocate a relay; the same username with
a forged password, and an expired username with a correct HMAC, are refused by the TURN server.

    python3 tests/interop/turn_credentials.py ws://HOST:8080/ws SECRET

Run by tests/browser/turn.mjs (the TURN server and Confab in their own namespaces). Uses aioice's
TURN client (installed with aiortc). Prints one line per check; exits 1 on any failure.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time
from urllib.parse import urlparse

import websockets
from aioice import turn


async def joined_ice_servers(url: str) -> list:
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "join", "room": "turn-creds", "name": "probe"}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg["type"] == "joined":
                await ws.send(json.dumps({"type": "leave"}))
                return msg["ice_servers"]
            if msg["type"] == "error":
                raise RuntimeError(f"join refused: {msg}")


def turn_addr(url: str):
    # turn:HOST:PORT?transport=udp
    rest = url.split(":", 1)[1].split("?", 1)[0]
    host, port = rest.rsplit(":", 1)
    return host, int(port)


async def allocate(server, username, password) -> str:
    """Allocates a relay; returns its address, or raises."""
    transport, _ = await asyncio.wait_for(
        turn.create_turn_endpoint(asyncio.DatagramProtocol, server_addr=server, username=username, password=password),
        10,
    )
    try:
        return str(transport.get_extra_info("sockname"))
    finally:
        transport.close()


async def main() -> int:
    url, secret = sys.argv[1], sys.argv[2]
    servers = await joined_ice_servers(url)
    turns = [s for s in servers if any(u.startswith("turn:") for u in s["urls"])]
    if not turns or "username" not in turns[0]:
        print(f"turn: FAIL: joined carried no TURN credentials: {servers}")
        return 1
    cred = turns[0]
    server = turn_addr(next(u for u in cred["urls"] if u.startswith("turn:")))
    expiry, who = cred["username"].split(":", 1)
    ttl = int(expiry) - int(time.time())
    print(f"turn: joined gave {cred['urls']} username {cred['username']!r} (valid {ttl} s)")
    failures = 0
    try:
        relay = await allocate(server, cred["username"], cred["credential"])
        print(f"turn: PASS minted credentials allocate a relay ({relay})")
    except Exception as e:  # noqa: BLE001
        print(f"turn: FAIL minted credentials refused: {e!r}")
        failures += 1
    forged = base64.b64encode(hmac.new(b"not-the-secret", cred["username"].encode(), hashlib.sha1).digest()).decode()
    expired_user = f"{int(time.time()) - 60}:{who}"
    expired_pwd = base64.b64encode(hmac.new(secret.encode(), expired_user.encode(), hashlib.sha1).digest()).decode()
    for label, user, pwd in [("forged password", cred["username"], forged), ("expired username", expired_user, expired_pwd)]:
        try:
            await allocate(server, user, pwd)
            print(f"turn: FAIL {label} was accepted")
            failures += 1
        except Exception as e:  # noqa: BLE001 - a refusal is what we want
            print(f"turn: PASS {label} refused ({type(e).__name__}: {e})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
