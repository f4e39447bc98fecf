#!/usr/bin/env python3
"""A WHEP viewer we did not write the WebRTC stack of: aiortc (PyPI). One recvonly audio and one
recvonly video transceiver, BUNDLEd, no STUN server (nothing leaves the
machine). POSTs the offer (with every candidate: aiortc gathers before it returns the offer) to
/whep/{room} or /whep/{room}/{participant}, sets the answer, waits for `connected` (10 s),
decodes what arrives for --seconds, then DELETEs the session and checks the DELETE answers 200.

    python3 tests/interop/whep_view.py http://10.99.0.1:8080 --room whep --seconds 5 --min-video-frames 60
    python3 tests/interop/whep_view.py http://10.99.0.1:8080 --room whep --participant pAbC123 --seconds 5

Counts the decoded video frames (and their sizes) and audio frames; prints `whep_view: ...`
progress lines with timings (from the POST) and one JSON line `whep_view: summary {...}`. Exits 1
on an HTTP error, a connection not `connected` in time, fewer than --min-video-frames video
frames (or --min-audio-frames audio frames), or a DELETE not answered 200.
Run it with a python that has aiortc (tests/interop/python-deps.sh), in a network namespace
with a non-loopback address (aiortc offers no loopback candidates); see whip_whep.sh.
"""

import argparse
import asyncio
import collections
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from whip_common import HTTP_TIMEOUT, Failure, candidates
from whip_common import request as blocking_request



def log(msg: str) -> None:
    print(f"whep_view: {msg}", flush=True)


def request(method: str, url: str, body: bytes = None, headers: dict = None):
    """`whip_common.request` in a thread: (status, headers, body)."""
    return asyncio.wait_for(asyncio.to_thread(blocking_request, method, url, body, headers), HTTP_TIMEOUT + 2)


# What reaches aiortc's receivers and what they ask for, per kind (diagnostics for a stream that
# arrives but does not decode): RTP packets, payload types, SSRCs, keyframes, and the PLIs and
# NACKs aiortc sends. Hooked around RTCRtpReceiver's private methods; a hook that breaks only
# loses its numbers.
WIRE = collections.defaultdict(lambda: {"packets": 0, "pts": set(), "ssrcs": set(), "keyframes": 0, "plis_sent": 0, "nacks_sent": 0})


def _kind(receiver) -> str:
    track = getattr(receiver, "track", None)
    return getattr(track, "kind", None) or getattr(receiver, "_RTCRtpReceiver__kind", "?")


def _is_keyframe(payload: bytes, codec: str) -> bool:
    try:
        if codec == "vp8":
            i = 1
            if payload[0] & 0x80:  # X: extensions follow
                x = payload[1]
                i = 2
                if x & 0x80:  # I: picture id, 1 or 2 bytes
                    i += 2 if payload[i] & 0x80 else 1
                if x & 0x40:  # L: TL0PICIDX
                    i += 1
                if x & 0x30:  # T or K: TID/KEYIDX
                    i += 1
            start = payload[0] & 0x10 and (payload[0] & 0x07) == 0
            return bool(start) and (payload[i] & 0x01) == 0
        if codec == "h264":
            nal = payload[0] & 0x1F
            if nal == 5:
                return True
            if nal == 24:  # STAP-A: an IDR among the aggregated NAL units
                i = 1
                while i + 2 < len(payload):
                    size = int.from_bytes(payload[i:i + 2], "big")
                    if payload[i + 2] & 0x1F == 5:
                        return True
                    i += 2 + size
            if nal == 28:  # FU-A start of an IDR
                return bool(payload[1] & 0x80) and payload[1] & 0x1F == 5
    except IndexError:
        pass
    return False


def install_wire_hooks(codec_of_pt: dict) -> None:
    orig_rtp = RTCRtpReceiver._handle_rtp_packet
    orig_pli = RTCRtpReceiver._send_rtcp_pli
    orig_nack = RTCRtpReceiver._send_rtcp_nack

    async def handle_rtp(self, packet, arrival_time_ms):
        try:
            w = WIRE[_kind(self)]
            w["packets"] += 1
            w["pts"].add(packet.payload_type)
            w["ssrcs"].add(packet.ssrc)
            if _is_keyframe(packet.payload, codec_of_pt.get(packet.payload_type, "")):
                w["keyframes"] += 1
        except Exception:  # noqa: BLE001 - diagnostics only
            pass
        return await orig_rtp(self, packet, arrival_time_ms)

    async def send_pli(self, media_ssrc):
        WIRE[_kind(self)]["plis_sent"] += 1
        return await orig_pli(self, media_ssrc)

    async def send_nack(self, media_ssrc, lost):
        WIRE[_kind(self)]["nacks_sent"] += 1
        return await orig_nack(self, media_ssrc, lost)

    RTCRtpReceiver._handle_rtp_packet = handle_rtp
    RTCRtpReceiver._send_rtcp_pli = send_pli
    RTCRtpReceiver._send_rtcp_nack = send_nack


def wire_summary() -> dict:
    return {k: {**v, "pts": sorted(v["pts"]), "ssrcs": len(v["ssrcs"])} for k, v in WIRE.items()}


async def run(a) -> int:
    # iceServers=[]: aiortc's default is Google's STUN server. Bundle policy: aiortc's default
    # (balanced; the offer still groups both m-lines in BUNDLE). With max-bundle aiortc 1.x reads
    # the remote candidates only from the *last* m-section of the group (its per-transport dict of
    # m-sections keeps the last one), while an answerer puts them in the first, tagged one (RFC
    # 8843/JSEP; Confab does): ICE would never start checking.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    video = pc.addTransceiver("video", direction="recvonly")
    if a.video_codec:
        # Offer only this codec (and its RTX) for the video slot.
        want = f"video/{a.video_codec}".lower()
        caps = RTCRtpReceiver.getCapabilities("video").codecs
        keep = [c for c in caps if c.mimeType.lower() == want]
        keep += [c for c in caps if c.mimeType.lower() == "video/rtx"]
        if not any(c.mimeType.lower() == want for c in keep):
            raise SystemExit(f"whep_view: aiortc cannot receive {want}")
        video.setCodecPreferences(keep)
    stats = {"video_frames": 0, "audio_frames": 0, "audio_samples": 0, "sizes": collections.Counter(),
             "first_video_ms": None, "first_audio_ms": None}
    t_post = None
    connected = asyncio.Event()
    failed = asyncio.Event()
    consumers = []

    async def consume(track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = round((time.monotonic() - t_post) * 1000) if t_post else None
            if track.kind == "video":
                stats["video_frames"] += 1
                stats["sizes"][f"{frame.width}x{frame.height}"] += 1
                if stats["first_video_ms"] is None:
                    stats["first_video_ms"] = now
            else:
                stats["audio_frames"] += 1
                stats["audio_samples"] += frame.samples
                if stats["first_audio_ms"] is None:
                    stats["first_audio_ms"] = now

    @pc.on("track")
    def on_track(track):
        consumers.append(asyncio.ensure_future(consume(track)))

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            connected.set()
        elif pc.connectionState in ("failed", "closed"):
            failed.set()

    path = f"/whep/{urllib.parse.quote(a.room)}" + (f"/{urllib.parse.quote(a.participant)}" if a.participant else "")
    url = a.base.rstrip("/") + path
    summary = {"url": path}
    location = None
    rc = 0
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        problems = [p for p, ok in [
            ("no a=group:BUNDLE", re.search(r"^a=group:BUNDLE \S+ \S+", offer, re.M)),
            ("an m-line is not recvonly", len(re.findall(r"^a=recvonly", offer, re.M)) == 2),
            ("no candidate", re.search(r"^a=candidate:", offer, re.M)),
        ] if not ok]
        if problems:
            raise Failure(f"aiortc made an unexpected offer ({'; '.join(problems)}):\n{offer}")
        log(f"offer ready ({len(offer)} bytes): recvonly audio + video, candidates {', '.join(candidates(offer))}")
        headers = {"Content-Type": "application/sdp", "Accept": "application/sdp"}
        if a.token:
            headers["Authorization"] = f"Bearer {a.token}"
        t_post = time.monotonic()
        status, rh, body = await request("POST", url, offer.encode(), headers)
        t_answer = time.monotonic() - t_post
        if status != 201:
            raise Failure(f"POST {url}: HTTP {status} (want 201): {body.strip()[:500]}")
        loc = rh.get("Location")
        if not loc:
            raise Failure(f"POST {url}: 201 without a Location header")
        location = urllib.parse.urljoin(url, loc)
        if (rh.get("Content-Type") or "").split(";")[0].strip().lower() != "application/sdp":
            raise Failure(f"POST {url}: answer Content-Type {rh.get('Content-Type')!r}, not application/sdp")
        codecs = sorted(set(re.findall(r"^a=rtpmap:\d+ ([^/\s]+)/", body, re.M)) - {"rtx", "red", "ulpfec"})
        summary.update(location=loc, etag=rh.get("ETag"), answer_codecs=codecs)
        log(f"POST {path} -> 201 in {t_answer * 1000:.0f} ms, Location {loc}; answer codecs {', '.join(codecs)}, "
            f"candidates {', '.join(candidates(body)) or 'none'}")
        if a.verbose:
            print(f"--- offer\n{offer}--- answer\n{body}---", flush=True)
        codec_of_pt = {int(pt): name.lower() for pt, name in re.findall(r"^a=rtpmap:(\d+) ([^/\s]+)/", body, re.M)}
        install_wire_hooks(codec_of_pt)
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        waiter = asyncio.ensure_future(connected.wait())
        breaker = asyncio.ensure_future(failed.wait())
        await asyncio.wait({waiter, breaker}, timeout=a.connect_timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        breaker.cancel()
        if not connected.is_set():
            raise Failure(f"connection state {pc.connectionState!r} (ICE {pc.iceConnectionState!r}) "
                          f"{a.connect_timeout:.0f} s after the POST, not connected")
        t_conn = time.monotonic() - t_post
        summary.update(answer_ms=round(t_answer * 1000), connected_ms=round(t_conn * 1000))
        log(f"connected {t_conn * 1000:.0f} ms after the POST; decoding for {a.seconds:.0f} s")
        t_end = time.monotonic() + a.seconds
        while time.monotonic() < t_end:
            if failed.is_set():
                raise Failure(f"the connection broke while viewing: {pc.connectionState}")
            await asyncio.sleep(0.1)
        # What arrived at all (before decoding): aiortc's inbound-rtp stats per kind.
        rtp = {}
        try:
            report = await asyncio.wait_for(pc.getStats(), 5)
            for r in report.values():
                if getattr(r, "type", None) == "inbound-rtp":
                    e = rtp.setdefault(r.kind, {"packets": 0, "lost": 0})
                    e["packets"] += r.packetsReceived or 0
                    e["lost"] += r.packetsLost or 0
        except Exception as e:  # noqa: BLE001 - stats are informative only
            rtp = {"error": repr(e)}
        wire = wire_summary()
        summary.update(
            rtp_in=rtp,
            wire=wire,
            seconds=a.seconds, video_frames=stats["video_frames"], audio_frames=stats["audio_frames"],
            audio_samples=stats["audio_samples"], video_sizes=dict(stats["sizes"].most_common()),
            first_video_ms=stats["first_video_ms"], first_audio_ms=stats["first_audio_ms"],
            video_fps=round(stats["video_frames"] / a.seconds, 1),
        )
        log(f"decoded {stats['video_frames']} video frames ({summary['video_fps']} fps; sizes "
            f"{json.dumps(summary['video_sizes'])}; first at {stats['first_video_ms']} ms) and "
            f"{stats['audio_frames']} audio frames (first at {stats['first_audio_ms']} ms); RTP in {json.dumps(rtp)}")
        if stats["video_frames"] < a.min_video_frames:
            v = wire.get("video", {})
            raise Failure(f"{stats['video_frames']} video frames decoded, want >= {a.min_video_frames} (video on the wire: "
                          f"{v.get('packets', 0)} RTP packets, payload types {v.get('pts', [])}, {v.get('ssrcs', 0)} SSRCs, "
                          f"{v.get('keyframes', 0)} keyframe packets; aiortc sent {v.get('plis_sent', 0)} PLIs, {v.get('nacks_sent', 0)} NACKs)")
        if stats["audio_frames"] < a.min_audio_frames:
            raise Failure(f"{stats['audio_frames']} audio frames decoded, want >= {a.min_audio_frames}")
    except (Failure, asyncio.TimeoutError) as e:
        log(f"FAIL: {e!r}" if isinstance(e, asyncio.TimeoutError) else f"FAIL: {e}")
        rc = 1
    finally:
        if location:
            t0 = time.monotonic()
            try:
                status, _h, body = await request("DELETE", location)
            except (Failure, asyncio.TimeoutError) as e:
                status, body = None, repr(e)
            summary["delete_status"] = status
            if status == 200:
                log(f"DELETE {urllib.parse.urlparse(location).path} -> 200 in {(time.monotonic() - t0) * 1000:.0f} ms")
            else:
                log(f"FAIL: DELETE {location} -> {status} (want 200): {body.strip()[:300]}")
                rc = 1
        try:
            await asyncio.wait_for(pc.close(), 5)
        except asyncio.TimeoutError:
            log("pc.close() did not finish within 5 s")
        for c in consumers:
            c.cancel()
    summary["ok"] = rc == 0
    print(f"whep_view: summary {json.dumps(summary)}", flush=True)
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", help="server base URL, e.g. http://10.99.0.1:8080")
    ap.add_argument("--room", default="whep")
    ap.add_argument("--participant", help="view this participant only (/whep/{room}/{participant})")
    ap.add_argument("--token", help="Authorization: Bearer token (only when the server has API keys)")
    ap.add_argument("--seconds", type=float, default=5.0, help="decode this long after connected")
    ap.add_argument("--min-video-frames", type=int, default=0)
    ap.add_argument("--min-audio-frames", type=int, default=0)
    ap.add_argument("--video-codec", choices=["VP8", "H264"], help="offer only this video codec (default: aiortc's VP8 and H.264)")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--verbose", action="store_true", help="print the offer and the answer")
    a = ap.parse_args()
    # Hard cap: whatever hangs, the process ends.
    budget = a.connect_timeout + a.seconds + 2 * HTTP_TIMEOUT + 15
    try:
        return asyncio.run(asyncio.wait_for(run(a), budget))
    except asyncio.TimeoutError:
        print(f"whep_view: FAIL: the whole run exceeded {budget:.0f} s", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
