"""Server settings and the rules that make the defaults safe (loopback, limits, API key)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from jmed_edge.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost. Other names are not resolved (no DNS lookups)."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeSettings:
    model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_tokens_limit: int = 1024  # larger requests are clamped to it (see docs)
    max_concurrency: int = 1  # model instances answering at once
    queue: int = 8  # requests that may wait for a free instance; more get 429
    max_body_bytes: int = 1024 * 1024
    log_content: bool = False

    def check(self) -> None:
        """One-line ConfigError for the first setting that is invalid or unsafe."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port} is not a TCP port; use 1-65535 (or 0 for any free port)")
        for flag, value, least in (
            ("--max-tokens-limit", self.max_tokens_limit, 1),
            ("--max-concurrency", self.max_concurrency, 1),
            ("--queue", self.queue, 0),
            ("--max-body-bytes", self.max_body_bytes, 1024),
        ):
            if value < least:
                raise ConfigError(f"{flag} {value} must be at least {least}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError(
                "the API key is shorter than 8 characters; use a long random one (e.g. openssl rand -hex 24)"
            )
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigError(
                f"refusing to listen on {self.host} without an API key: anyone on the network could use the "
                "model; set --api-key (or JMED_EDGE_API_KEY), or keep the default --host 127.0.0.1"
            )

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)
