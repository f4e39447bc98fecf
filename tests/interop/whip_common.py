"""What the WHIP/WHEP interop clients share (standard library only: it is imported both by
Debian's python3 for the GStreamer publisher and by the pyenv python3 that has aiortc)."""

import re
import urllib.error
import urllib.request

HTTP_TIMEOUT = 10.0


class Failure(Exception):
    """A check failed: the message says what and how."""


def request(method: str, url: str, body: bytes = None, headers: dict = None):
    """(status, headers, body); HTTP errors are returned, not raised; network errors raise Failure."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as res:
            return res.status, res.headers, res.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        raise Failure(f"{method} {url}: {e}") from e


def candidates(sdp: str) -> list:
    """`address port typ` of every a=candidate (deduplicated, in order)."""
    out = []
    for m in re.finditer(r"^a=candidate:\S+ \d+ (\S+) \d+ (\S+) (\d+) typ (\S+)", sdp, re.M):
        c = f"{m.group(1).lower()} {m.group(2)}:{m.group(3)} {m.group(4)}"
        if c not in out:
            out.append(c)
    return out
