# Sourced by the tests that run aiortc (tests/interop/aiortc.sh, tests/browser/turn.sh) and by
# scripts/test.sh: installs aiortc and websockets from PyPI when they are missing. Debian's own
# Python refuses system-wide pip installs (PEP 668) unless told otherwise.
python_deps() {
  python3 -c 'import aiortc, websockets' 2>/dev/null && return 0
  echo "== pip install aiortc websockets"
  python3 -m pip install -q --disable-pip-version-check aiortc websockets 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages aiortc websockets
}
