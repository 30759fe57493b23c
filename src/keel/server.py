"""`keel serve`: checks that the settings are safe to serve with, then runs uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import sys

import uvicorn

from keel.app import build_app
from keel.config import Settings
from keel.runtime import Runtime
from keel.storage.urls import redact_url

__all__ = ["is_loopback", "run"]

log = logging.getLogger("keel")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request's full URL at INFO, and some URLs Keel calls are secrets (a Slack
    # webhook's path is its token, a collector URL may carry credentials): warnings only.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.admin_key is None:
        if not is_loopback(settings.host):
            sys.stderr.write(
                f"error: refusing to listen on {settings.host} without an admin key: set "
                "KEEL_ADMIN_KEY, or listen on 127.0.0.1\n"
            )
            raise SystemExit(2)
        log.warning(
            "no KEEL_ADMIN_KEY set: Keel runs in open mode, on loopback only; "
            "anyone on this machine can use the gateway and the management API"
        )
    log.info(
        "database: %s; data dir: %s", redact_url(settings.resolved_database_url), settings.data_dir
    )
    app = build_app(Runtime(settings))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
