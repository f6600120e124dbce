"""Process-level settings: what the command line decides, not what the manifests decide.

The master builds one ``Settings`` from the CLI and hands it to every worker at fork.
"""

from __future__ import annotations

import msgspec


class Settings(msgspec.Struct, frozen=True):
    config_path: str
    workers: int = 1
    listen_address: str = "0.0.0.0"
    pid_file: str | None = None
    access_log: bool = True
    # Graceful stop: how long in-flight requests may take after SIGTERM.
    graceful_timeout: float = 30.0
    # Downstream keep-alive idle: above the usual 60 s of a front load balancer.
    keepalive_timeout: float = 75.0
    # Client must finish its request line and headers within this time (slowloris).
    header_timeout: float = 60.0
    # Upstream timeouts (nginx: proxy_connect_timeout / proxy_read_timeout).
    connect_timeout: float = 10.0
    response_timeout: float = 60.0
    # Upstream keep-alive pool per endpoint and worker.
    pool_idle_limit: int = 64
    pool_idle_timeout: float = 30.0
    # Request line plus headers.
    max_header_bytes: int = 65536
    # Hostile-input limits (nginx's large_client_header_buffers is 8 KiB): a longer request-target
    # is 414, a longer header field (name and value) or more fields is 431.
    max_request_line: int = 8192
    max_field_size: int = 8192
    max_header_count: int = 100
    # A request body that stops arriving for this long is answered 408 (nginx's client_body_timeout).
    body_timeout: float = 60.0
    # Client connections per worker: at this the worker closes the idle ones that have waited longest
    # (fsmfast.worker.admission); only when all are busy does it stop accepting, new connections
    # waiting in the listen backlog until it is back under 90 % of it.
    max_connections: int = 4096
    # Error bodies the gateway writes name the namespace, Service, endpoint address and the
    # parser's message (otherwise only the error and access logs do) on every port; one
    # Gateway's ports: its fsmfast.io/detailed-errors annotation (Listener.detailed_errors).
    detailed_errors: bool = False
    backlog: int = 1024
    # -- operations (docs/operations.md) --
    # Admin listener of the master: /metrics, /healthz, /readyz, /config, /status. "" turns it off.
    admin_address: str = "127.0.0.1:9901"
    # Reload when a file under config_path changes (inotify, debounced), as SIGHUP does.
    watch: bool = False
    # Workers drop to this user/group after the master bound the listeners and read the keys.
    user: str | None = None
    group: str | None = None
    # None: stdout / stderr. SIGUSR1 reopens both.
    access_log_path: str | None = None
    error_log_path: str | None = None
    access_log_format: str = "json"  # or "combined"
    # A worker whose event loop has not beaten for this long is killed (SIGABRT, then SIGKILL) and replaced.
    worker_timeout: float = 30.0
    # -- edge protection (docs/edge-policies.md) --
    # Fleet-wide rate limits (RateLimitPolicy mode: Global) keep their quotas in this Redis
    # (redis://HOST:PORT/DB), shared by every gateway pointed at it; None: such limits are not applied.
    ratelimit_redis: str | None = None
    # How long a decision may wait for Redis, and what a request gets when Redis does not answer in
    # time or at all: through (fail open, the default: logged and counted) or 503 (fail closed).
    ratelimit_redis_timeout: float = 0.01
    ratelimit_fail_closed: bool = False
