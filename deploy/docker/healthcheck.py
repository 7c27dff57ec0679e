"""Container health check: GET http://127.0.0.1:<port>/healthz; exit 0 when it answers 200, else 1.

The port is ``<SERVICE>__HTTP__PORT`` (the service's own setting), or the first argument.
Standard library only, so it runs in the image without anything else.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    """Ask the service whether it is alive."""
    service = os.environ.get("SERVICE", "")
    port = argv[1] if len(argv) > 1 else os.environ.get(f"{service.upper()}__HTTP__PORT", "")
    if not port.isdigit():
        print(f"healthcheck: no port (set SERVICE and {service.upper() or '<SERVICE>'}__HTTP__PORT)")
        return 1
    path = os.environ.get("HEALTHCHECK_PATH", "/healthz")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
