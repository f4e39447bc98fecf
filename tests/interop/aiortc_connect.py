#!/usr/bin/env python3
"""aiortc (a WebRTC stack we did not write) joins a Confab room again and again and measures how
long each connection takes: from opening the signaling WebSocket to the peer connection reaching
`connected` (ICE + DTLS done). It publishes a silent Opus track so the offer has media.

    python3 tests/interop/aiortc_connect.py ws://10.98.0.1:8080/ws [--joins 20] [--enforce 0.3]

Run it through tests/interop/aiortc.sh (aiortc never offers loopback candidates, so it needs a
veth address; the script makes the namespaces). Prints every join and p50/p95/max; exits 1 if a
join fails, or (with --enforce S) if p50 or p95 is above S seconds.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time

import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack


async def one_join(url: str, room: str, name: str, timeout: float) -> dict:
    """One join; returns the phases' times (seconds since the WebSocket started to open)."""
    t0 = time.perf_counter()
    marks = {}
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "join", "room": room, "name": name}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if msg["type"] == "joined":
                break
            if msg["type"] == "error":
                raise RuntimeError(f"join refused: {msg}")
        marks["joined"] = time.perf_counter() - t0
        pc = RTCPeerConnection()
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def _state():
            if pc.connectionState == "connected":
                connected.set()

        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        marks["offer"] = time.perf_counter() - t0
        await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if msg["type"] == "answer":
                await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
                marks["answer"] = time.perf_counter() - t0
                break
            if msg["type"] == "error":
                raise RuntimeError(f"offer refused: {msg}")
        await asyncio.wait_for(connected.wait(), timeout)
        marks["connected"] = time.perf_counter() - t0
        await ws.send(json.dumps({"type": "leave"}))
        await pc.close()
    return marks


def quantile(xs, q):
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--joins", type=int, default=20)
    ap.add_argument("--room", default="aiortc")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--enforce", type=float, default=None, help="fail if p50 or p95 exceeds this (s)")
    args = ap.parse_args()
    times = []
    for i in range(args.joins):
        try:
            m = await one_join(args.url, args.room, f"aiortc{i}", args.timeout)
        except Exception as e:  # noqa: BLE001 - any failure of a join fails the run
            print(f"aiortc: join {i + 1} failed: {e!r}")
            return 1
        times.append(m["connected"])
        print(
            f"aiortc: join {i + 1}: joined {m['joined'] * 1000:.0f} ms, offer {m['offer'] * 1000:.0f} ms, "
            f"answer {m['answer'] * 1000:.0f} ms, connected {m['connected'] * 1000:.0f} ms"
        )
    p50, p95 = quantile(times, 0.5), quantile(times, 0.95)
    print(
        f"aiortc: {len(times)} joins, start of join -> connected: p50 {p50 * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {max(times) * 1000:.0f} ms, mean {statistics.mean(times) * 1000:.0f} ms"
    )
    if args.enforce is not None and (p50 > args.enforce or p95 > args.enforce):
        print(f"aiortc: FAIL: p50/p95 above {args.enforce * 1000:.0f} ms")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
