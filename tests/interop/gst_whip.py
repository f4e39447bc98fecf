#!/usr/bin/python3
"""A WHIP publisher we did not write the WebRTC stack of: GStreamer's webrtcbin (libnice ICE,
its own DTLS-SRTP), driven by this script, not whipsink. A moving test pattern in VP8 (or H.264
with --codec h264, openh264enc) and a sine tone in Opus, one BUNDLE transport (max-bundle),
sendonly:

    videotestsrc is-live=true pattern=ball ! WxH@30 ! vp8enc deadline=1 ! rtpvp8pay ! webrtcbin
    audiotestsrc is-live=true ! opusenc ! rtpopuspay ! webrtcbin

It creates the offer, waits for ICE gathering to complete (the offer then carries every
candidate: no trickle), POSTs it to /whip/{room}?name=NAME (Content-Type: application/sdp),
sets the answer, waits for webrtcbin's ICE and peer connection states to reach `connected`
(10 s), publishes for --seconds (or until SIGINT/SIGTERM) and DELETEs the session's Location.

Run with Debian's python (it has `gi`), in a network namespace with a non-loopback address
(libnice offers no loopback candidates when there is another interface); see whip_whep.sh:

    /usr/bin/python3 tests/interop/gst_whip.py http://10.99.0.1:8080 --room whip --name gst --seconds 20
    /usr/bin/python3 tests/interop/gst_whip.py --offer-only        # print and check the offer, no server

The offer is created once both webrtcbin sink pads have caps, so both m-lines declare their SSRC
(webrtcbin adds no MID header extension; an offer made earlier has no a=ssrc in the video m-line:
--early-offer makes one). Diagnostics: --verbose prints offer, answer and webrtcbin's stats;
--keepalive-conncheck makes libnice keep the pair alive with STUN Binding Requests instead of its
default Binding Indications every 25 s.

Prints `gst_whip: ...` progress lines with timings (from the POST), then one JSON summary line
`gst_whip: summary {...}`. Exits 1 on an HTTP error, a bad offer, an answer webrtcbin refuses, a
connection not `connected` within 10 s, a pipeline error or a DELETE that does not answer 200;
2 on a usage or environment error.
"""

import argparse
import json
import re
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from whip_common import Failure, candidates, request

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstWebRTC", "1.0")
    gi.require_version("GstSdp", "1.0")
    from gi.repository import Gst, GstSdp, GstWebRTC
except (ImportError, ValueError) as e:  # pragma: no cover - environment
    print(f"gst_whip: needs python3-gi, gir1.2-gst-plugins-bad-1.0 (run with /usr/bin/python3): {e}", file=sys.stderr)
    sys.exit(2)

GATHER_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0

PS = GstWebRTC.WebRTCPeerConnectionState
IS = GstWebRTC.WebRTCICEConnectionState


def log(msg: str) -> None:
    print(f"gst_whip: {msg}", flush=True)


def ms(t: float) -> str:
    return f"{t * 1000:.0f} ms"


def pipeline_description(a) -> str:
    video_caps = f"video/x-raw,width={a.width},height={a.height},framerate=30/1"
    if a.codec == "vp8":
        venc = "vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 target-bitrate=800000 error-resilient=partitions ! rtpvp8pay pt=96 picture-id-mode=15-bit"
        vrtp = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
    else:
        # (openh264enc refuses profile=constrained-baseline here: cmInitParaError, not-negotiated.)
        venc = "openh264enc bitrate=800000 gop-size=60 complexity=low ! video/x-h264,profile=baseline ! h264parse ! rtph264pay pt=102 config-interval=-1 aggregate-mode=zero-latency"
        vrtp = "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000"
    return (
        "webrtcbin name=webrtc bundle-policy=max-bundle "
        f"videotestsrc is-live=true pattern={a.pattern} ! {video_caps} ! videoconvert ! queue max-size-buffers=2 leaky=downstream ! "
        f"{venc} ! {vrtp} ! webrtc. "
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audio/x-raw,rate=48000,channels=1 ! audioconvert ! audioresample ! "
        "queue ! opusenc bitrate=32000 frame-size=20 ! rtpopuspay pt=111 ! "
        "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! webrtc."
    )


def check_offer(sdp: str, codec: str) -> list:
    """The offer's problems (empty when it is what a WHIP server should get)."""
    problems = []
    if not re.search(r"^a=group:BUNDLE \S+ \S+", sdp, re.M):
        problems.append("no a=group:BUNDLE with both m-lines")
    if not re.search(r"^m=audio ", sdp, re.M) or not re.search(r"^m=video ", sdp, re.M):
        problems.append("not one audio and one video m-line")
    want = "VP8/90000" if codec == "vp8" else "H264/90000"
    if not re.search(rf"^a=rtpmap:\d+ {want}", sdp, re.M | re.I):
        problems.append(f"no {want} rtpmap")
    if not re.search(r"^a=rtpmap:\d+ OPUS/48000/2", sdp, re.M | re.I):
        problems.append("no OPUS/48000/2 rtpmap")
    if not re.search(r"^a=candidate:", sdp, re.M):
        problems.append("no a=candidate (ICE gathering gave nothing: no non-loopback interface?)")
    if re.search(r"^a=(sendrecv|recvonly)", sdp, re.M):
        problems.append("an m-line is not sendonly")
    if not re.search(r"^a=fingerprint:", sdp, re.M):
        problems.append("no DTLS fingerprint")
    return problems


def add_missing_candidates(sdp: str, gathered: list) -> str:
    """Puts gathered candidates (mline index, `candidate:...`) into the m-sections of `sdp` that
    have none (webrtcbin versions differ in whether the local description gets them)."""
    if not gathered:
        return sdp
    nl = "\r\n" if "\r\n" in sdp else "\n"
    parts = re.split(r"(?m)^(?=m=)", sdp)
    head, sections = parts[0], parts[1:]
    for i, sec in enumerate(sections):
        if "a=candidate:" in sec:
            continue
        lines = [f"a={c}" for (idx, c) in gathered if idx == i]
        if not lines:
            continue
        lines.append("a=end-of-candidates")
        sections[i] = sec.rstrip("\r\n") + nl + nl.join(lines) + nl
    return head + "".join(sections)


class Publisher:
    def __init__(self, a):
        self.a = a
        self.pipe = Gst.parse_launch(pipeline_description(a))
        self.webrtc = self.pipe.get_by_name("webrtc")
        self.bus = self.pipe.get_bus()
        self.gathered = []
        self.webrtc.connect("on-ice-candidate", lambda _w, idx, cand: self.gathered.append((idx, cand)))
        self.stop = False
        if a.keepalive_conncheck:
            # libnice's default keepalive is a STUN Binding Indication every 25 s (RFC 8445 section
            # 11); this makes it send Binding Requests instead (what browsers send for consent).
            # (The wrappers are kept: PyGObject drops a reference it was not given when they go, and
            # webrtcbin's ICE object would be freed under it.)
            self._ice = self.webrtc.get_property("ice-agent")
            self._nice = self._ice.get_property("agent")
            self._nice.set_property("keepalive-conncheck", True)

    def poll_bus(self, wait: float) -> None:
        """Waits up to `wait` s for a bus message; a pipeline error raises Failure."""
        msg = self.bus.timed_pop_filtered(int(wait * Gst.SECOND), Gst.MessageType.ERROR | Gst.MessageType.EOS)
        if msg is None:
            return
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            raise Failure(f"pipeline error from {msg.src.get_name()}: {err.message} ({dbg})")
        raise Failure("pipeline reached EOS")

    def wait_for(self, what: str, cond, timeout: float) -> float:
        """Polls `cond()` (and the bus) every 20 ms; returns when it held, raises Failure after `timeout`."""
        t0 = time.monotonic()
        while not cond():
            if self.stop:
                raise Failure(f"interrupted while waiting for {what}")
            if time.monotonic() - t0 > timeout:
                raise Failure(f"{what}: not within {timeout:.0f} s ({self.states()})")
            self.poll_bus(0.02)
        return time.monotonic() - t0

    def states(self) -> str:
        w = self.webrtc
        return (
            f"ice-gathering-state={w.get_property('ice-gathering-state').value_nick}, "
            f"ice-connection-state={w.get_property('ice-connection-state').value_nick}, "
            f"connection-state={w.get_property('connection-state').value_nick}"
        )

    def promise(self, signal_name: str, *args):
        p = Gst.Promise.new()
        self.webrtc.emit(signal_name, *args, p)
        if p.wait() != Gst.PromiseResult.REPLIED:
            raise Failure(f"webrtcbin did not answer {signal_name}")
        return p.get_reply()

    def sink_caps(self) -> list:
        """The caps on webrtcbin's sink pads (None for a pad without caps yet)."""
        caps = []
        it = self.webrtc.iterate_sink_pads()
        while True:
            res, pad = it.next()
            if res != Gst.IteratorResult.OK:
                break
            caps.append(pad.get_current_caps())
        return caps

    def make_offer(self, early: bool) -> str:
        self.pipe.set_state(Gst.State.PLAYING)
        if not early:
            # webrtcbin puts a=ssrc into an m-line only once its sink pad has caps (the payloader's
            # ssrc): without them the offer's video m-line would declare no SSRC, and webrtcbin adds
            # no MID header extension either, so the receiver could only map the stream by payload type.
            def ready() -> bool:
                caps = self.sink_caps()
                return len(caps) == 2 and all(c is not None and c.get_structure(0).has_field("ssrc") for c in caps)

            self.wait_for("caps (with ssrc) on both webrtcbin sink pads", ready, GATHER_TIMEOUT)
        # "get-transceivers" returns a GArray PyGObject cannot iterate; ask one by one.
        i = 0
        while (t := self.webrtc.emit("get-transceiver", i)) is not None:
            t.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
            i += 1
        if i != 2:
            raise Failure(f"webrtcbin has {i} transceivers, not 2 (audio, video)")
        reply = self.promise("create-offer", None)
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            err = reply.get_value("error") if reply is not None and reply.has_field("error") else None
            raise Failure(f"create-offer gave no offer ({err.message if err else reply})")
        self.promise("set-local-description", offer)
        gather = self.wait_for(
            "ICE gathering complete",
            lambda: self.webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE,
            GATHER_TIMEOUT,
        )
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        sdp = add_missing_candidates(sdp, self.gathered)
        log(f"offer ready ({len(sdp)} bytes, gathering {ms(gather)}); candidates: {', '.join(candidates(sdp)) or 'none'}")
        codecs = re.findall(r"^a=(?:rtpmap|fmtp):\d+ (.*?)\r?$", sdp, re.M)
        ssrcs = len(set(re.findall(r"^a=ssrc:(\d+)", sdp, re.M)))
        log(f"offer codecs: {'; '.join(codecs)}; {ssrcs} SSRCs declared")
        return sdp

    def set_answer(self, text: str) -> None:
        res, msg = GstSdp.SDPMessage.new_from_text(text)
        if res != GstSdp.SDPResult.OK:
            raise Failure(f"the answer does not parse as SDP ({res.value_nick}):\n{text}")
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        reply = self.promise("set-remote-description", answer)
        if reply is not None and reply.has_field("error"):
            raise Failure(f"webrtcbin refused the answer: {reply.get_value('error').message}\n{text}")

    def connected(self) -> bool:
        ice = self.webrtc.get_property("ice-connection-state")
        return ice in (IS.CONNECTED, IS.COMPLETED) and self.webrtc.get_property("connection-state") == PS.CONNECTED

    def broken(self) -> str:
        ice = self.webrtc.get_property("ice-connection-state")
        pc = self.webrtc.get_property("connection-state")
        if ice in (IS.FAILED, IS.CLOSED) or pc in (PS.FAILED, PS.CLOSED):
            return self.states()
        return ""

    def outbound(self) -> dict:
        """mime type → {packets, bytes} of webrtcbin's outbound-rtp stats (best effort). The
        outbound-rtp entries' `kind` and `codec-id` are not reliable in 1.22 (both said audio,
        sink_1, in testing); the codec entries carry the ssrc and the right mime type."""
        out = {}
        try:
            reply = self.promise("get-stats", None)
        except Failure:
            return out
        if reply is None:
            return out
        entries = []
        reply.foreach(lambda _f, v: entries.append(v) or True)
        entries = [v for v in entries if isinstance(v, Gst.Structure) and v.has_field("type")]
        mime = {}
        for v in entries:
            if v.get_value("type") == GstWebRTC.WebRTCStatsType.CODEC and v.has_field("ssrc"):
                mime[v.get_value("ssrc")] = v.get_value("mime-type")
        for v in entries:
            if v.get_value("type") != GstWebRTC.WebRTCStatsType.OUTBOUND_RTP:
                continue
            e = out.setdefault(mime.get(v.get_value("ssrc"), f"ssrc {v.get_value('ssrc')}"), {"packets": 0, "bytes": 0})
            e["packets"] += int(v.get_value("packets-sent") or 0) if v.has_field("packets-sent") else 0
            e["bytes"] += int(v.get_value("bytes-sent") or 0) if v.has_field("bytes-sent") else 0
        return out

    def close(self) -> None:
        self.pipe.set_state(Gst.State.NULL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", nargs="?", help="server base URL, e.g. http://10.99.0.1:8080")
    ap.add_argument("--room", default="whip")
    ap.add_argument("--name", default="gst")
    ap.add_argument("--token", help="Authorization: Bearer token (only when the server has API keys)")
    ap.add_argument("--seconds", type=float, default=20.0, help="publish this long after connected (SIGTERM ends it sooner)")
    ap.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--pattern", default="ball", help="videotestsrc pattern (ball moves)")
    ap.add_argument("--offer-only", action="store_true", help="print and check the offer, contact no server")
    ap.add_argument("--early-offer", action="store_true",
                    help="create the offer at once, before the sink pads have caps (the video m-line then has no a=ssrc)")
    ap.add_argument("--keepalive-conncheck", action="store_true",
                    help="diagnostic: libnice keepalives as Binding Requests instead of its default Binding Indications every 25 s")
    ap.add_argument("--verbose", action="store_true", help="print the offer, the answer and webrtcbin's stats")
    a = ap.parse_args()
    if not a.offer_only and not a.base:
        ap.error("the server base URL is required (or --offer-only)")
    Gst.init(None)
    missing = [e for e in ["webrtcbin", "nicesrc", "dtlssrtpenc", "videotestsrc", "audiotestsrc", "opusenc", "rtpopuspay"]
               + (["vp8enc", "rtpvp8pay"] if a.codec == "vp8" else ["openh264enc", "h264parse", "rtph264pay"])
               if Gst.ElementFactory.find(e) is None]
    if missing:
        print(f"gst_whip: GStreamer elements missing: {', '.join(missing)} (gstreamer1.0-plugins-bad/-good/-nice)", file=sys.stderr)
        return 2

    pub = Publisher(a)

    def on_signal(signum, _frame):
        pub.stop = True
        log(f"{signal.Signals(signum).name}: stopping")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    location = None
    summary = {"room": a.room, "name": a.name, "codec": a.codec, "size": f"{a.width}x{a.height}"}
    rc = 0
    try:
        offer = pub.make_offer(a.early_offer)
        problems = check_offer(offer, a.codec)
        if a.offer_only:
            print(offer, end="")
            if problems:
                raise Failure(f"bad offer: {'; '.join(problems)}")
            log("offer OK: " + ", ".join(["BUNDLE", "sendonly", a.codec.upper(), "OPUS", f"{len(candidates(offer))} candidates"]))
            return 0
        if problems:
            raise Failure(f"webrtcbin made an offer a WHIP server should not get: {'; '.join(problems)}\n{offer}")

        url = f"{a.base.rstrip('/')}/whip/{urllib.parse.quote(a.room)}?name={urllib.parse.quote(a.name)}"
        headers = {"Content-Type": "application/sdp", "Accept": "application/sdp"}
        if a.token:
            headers["Authorization"] = f"Bearer {a.token}"
        t_post = time.monotonic()
        status, rh, body = request("POST", url, offer.encode(), headers)
        t_answer = time.monotonic() - t_post
        if status != 201:
            raise Failure(f"POST {url}: HTTP {status} (want 201): {body.strip()[:500]}")
        loc = rh.get("Location")
        if not loc:
            raise Failure(f"POST {url}: 201 without a Location header")
        location = urllib.parse.urljoin(url, loc)
        ctype = (rh.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            raise Failure(f"POST {url}: answer Content-Type is {rh.get('Content-Type')!r}, not application/sdp")
        summary.update(location=loc, etag=rh.get("ETag"))
        log(f"POST {url} -> 201 in {ms(t_answer)}, Location {loc}, ETag {rh.get('ETag')}; "
            f"answer candidates: {', '.join(candidates(body)) or 'none'}")
        if a.verbose:
            print(f"--- offer\n{offer}--- answer\n{body}---", flush=True)
        pub.set_answer(body)
        t_ice = [None]

        def up() -> bool:
            if t_ice[0] is None and pub.webrtc.get_property("ice-connection-state") in (IS.CONNECTED, IS.COMPLETED):
                t_ice[0] = time.monotonic() - t_post
            bad = pub.broken()
            if bad:
                raise Failure(f"the connection failed: {bad}")
            return pub.connected()

        pub.wait_for("ICE and peer connection state connected", up, CONNECT_TIMEOUT)
        t_conn = time.monotonic() - t_post
        summary.update(answer_ms=round(t_answer * 1000), ice_connected_ms=round((t_ice[0] or t_conn) * 1000),
                       connected_ms=round(t_conn * 1000))
        log(f"connected: POST -> answer {ms(t_answer)}, -> ICE connected {ms(t_ice[0] or t_conn)}, "
            f"-> connected (DTLS) {ms(t_conn)}")

        t_end = time.monotonic() + a.seconds
        while time.monotonic() < t_end and not pub.stop:
            pub.poll_bus(0.1)
            bad = pub.broken()
            if bad:
                raise Failure(f"the connection broke while publishing: {bad}")
        summary["published_s"] = round(time.monotonic() - (t_end - a.seconds), 1)
        summary["outbound"] = pub.outbound()
        if a.verbose:
            reply = pub.promise("get-stats", None)
            print(f"--- stats\n{reply.to_string() if reply else None}\n---", flush=True)
        log(f"published {summary['published_s']} s; sent {json.dumps(summary['outbound'])}")
    except Failure as e:
        log(f"FAIL: {e}")
        rc = 1
    finally:
        if location:
            t0 = time.monotonic()
            try:
                status, _h, body = request("DELETE", location)
            except Failure as e:
                status, body = None, str(e)
            summary["delete_status"] = status
            if status == 200:
                log(f"DELETE {location} -> 200 in {ms(time.monotonic() - t0)}")
            else:
                log(f"FAIL: DELETE {location} -> {status} (want 200): {body.strip()[:300]}")
                rc = 1
        pub.close()
    if not a.offer_only:
        summary["ok"] = rc == 0
        print(f"gst_whip: summary {json.dumps(summary)}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
