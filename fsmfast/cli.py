"""The ``fsmfast`` command: ``run`` the gateway, ``check`` a configuration, show its ``routes``,
``explain`` how one request is routed, show a running gateway's ``status``, or start the ``demo``.

Exit codes (``fsmfast.errors``): 0 ok, 1 configuration invalid, 2 usage, 3 worker boot
failure, 4 listener bind failure (a port taken by another process, or another master already
running per the pidfile).

Signals to the master of ``fsmfast run`` (gunicorn's convention, because systemd and
Kubernetes send TERM): HUP reloads the configuration, TERM stops gracefully, INT and QUIT
stop fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fsmfast import __version__
from fsmfast.errors import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, ConfigError
from fsmfast.settings import Settings

if TYPE_CHECKING:
    from fsmfast.compile import Build

WORKERS_ENV = ("FSMFAST_WORKERS", "WEB_CONCURRENCY")
_DEFAULTS = Settings(config_path="")
# Hostile-input limits of `run` (docs/hardening.md): flag, Settings field, metavar, help.
LIMITS = (
    ("--max-request-line", "max_request_line", "BYTES", "longest request-target; longer gets 414"),
    ("--max-field-size", "max_field_size", "BYTES", "longest header field, name and value; longer gets 431"),
    ("--max-head-size", "max_header_bytes", "BYTES", "largest request line plus headers; larger gets 431 or 414"),
    ("--max-header-count", "max_header_count", "N", "most header fields in a request; more get 431"),
    (
        "--max-connections",
        "max_connections",
        "N",
        "client connections per worker; at it the oldest idle ones are closed for new clients (all busy:"
        " accepting stops until back under 90%%); above 75%% idle and header timeouts drop to 5 s",
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # The demo owns its own flags (including -h); hand them over untouched.
    if args and args[0] == "demo":
        from fsmfast.demo.run import main as demo_main

        return demo_main(args[1:])
    parser = make_parser()
    try:
        ns = parser.parse_args(args)
        if ns.command == "run":
            settings = settings_from(ns, parser)
        elif ns.command == "check":
            return check(ns.config)
        elif ns.command in ("routes", "explain"):
            return routes_or_explain(ns)
        elif ns.command == "status":
            return status(ns.admin_address)
        else:
            parser.print_usage(sys.stderr)
            return EXIT_USAGE
    except SystemExit as e:
        # argparse exits for --help, --version and usage errors; main() returns codes instead.
        return e.code if isinstance(e.code, int) else EXIT_USAGE

    from fsmfast.master import arbiter

    return arbiter.run(settings)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsmfast",
        description="Kubernetes Gateway API gateway for bare metal.",
    )
    parser.add_argument("--version", action="version", version=f"fsmfast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="serve the gateway (prefork master and workers)",
        description="Serve the Gateway API manifests at PATH. SIGHUP reloads, SIGTERM drains, SIGINT/SIGQUIT stop.",
    )
    run.add_argument("-c", "--config", required=True, metavar="PATH", help="manifest file or directory")
    run.add_argument(
        "-w",
        "--workers",
        type=positive_int,
        metavar="N",
        help="worker processes (default: $FSMFAST_WORKERS, $WEB_CONCURRENCY, else the CPU count)",
    )
    run.add_argument(
        "-p", "--pid-file", metavar="FILE", help="write the master's pid here; refuse if it names a live fsmfast master"
    )
    run.add_argument(
        "--listen-address",
        type=ip_literal,
        default="0.0.0.0",
        metavar="ADDR",
        help="IPv4 or IPv6 address to bind every listener port on (default: 0.0.0.0; :: is dual-stack)",
    )
    run.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not write the access log")
    run.add_argument(
        "--access-log",
        dest="access_log_path",
        metavar="PATH",
        help="append the access log to PATH (default: stdout); SIGUSR1 reopens it",
    )
    run.add_argument(
        "--access-log-format",
        choices=("json", "combined"),
        default=_DEFAULTS.access_log_format,
        help="one JSON object per line, or nginx's combined format with the request id appended (default: json)",
    )
    run.add_argument(
        "--ratelimit-redis",
        metavar="URL",
        help="keep fleet-wide rate limits (mode: Global) in this Redis, redis://HOST:PORT/DB (default: not applied)",
    )
    run.add_argument(
        "--ratelimit-redis-timeout",
        type=positive_float,
        default=_DEFAULTS.ratelimit_redis_timeout,
        metavar="S",
        help="how long a request waits for Redis's decision (default: %(default)gs)",
    )
    run.add_argument(
        "--ratelimit-fail",
        choices=("open", "closed"),
        default="open",
        help="without Redis's answer in time: let the request through (open, logged and counted) or 503 (closed)",
    )
    run.add_argument(
        "--error-log",
        dest="error_log_path",
        metavar="PATH",
        help="append the error log to PATH (default: stderr); SIGUSR1 reopens it",
    )
    run.add_argument(
        "--admin-address",
        type=admin_address,
        default=_DEFAULTS.admin_address,
        metavar="HOST:PORT",
        help="the master's admin listener: /metrics, /healthz, /readyz, /config, /status (default: %(default)s;"
        " an empty value turns it off)",
    )
    run.add_argument(
        "--watch",
        action="store_true",
        help="reload when a file under the config path changes (debounced; a broken edit keeps the old generation)",
    )
    run.add_argument("--user", metavar="USER", help="workers drop to this user (name or uid) before they serve")
    run.add_argument("--group", metavar="GROUP", help="workers drop to this group (default: the user's primary group)")
    run.add_argument(
        "--detailed-errors",
        action="store_true",
        help="error bodies name the namespace, Service and endpoint address that failed (default: only the logs"
        " do; one Gateway's ports: annotation fsmfast.io/detailed-errors)",
    )
    run.add_argument(
        "--graceful-timeout",
        type=non_negative_float,
        default=_DEFAULTS.graceful_timeout,
        metavar="S",
        help="after SIGTERM, how long in-flight requests may take (default: %(default)gs)",
    )
    timeouts = (
        ("--connect-timeout", "connect_timeout", "upstream connect and TLS handshake; expiry answers 504"),
        ("--response-timeout", "response_timeout", "upstream silence while a request is in flight; expiry answers 504"),
        ("--keepalive-timeout", "keepalive_timeout", "idle client keep-alive connections are closed after this"),
        ("--header-timeout", "header_timeout", "a client must send its request head within this; else 408"),
        ("--pool-idle-timeout", "pool_idle_timeout", "idle upstream keep-alive connections are closed after this"),
        ("--body-timeout", "body_timeout", "a request body that stops arriving for this long gets 408"),
        ("--worker-timeout", "worker_timeout", "a worker whose event loop does not beat for this long is replaced"),
    )
    for flag, field, text in timeouts:
        run.add_argument(
            flag,
            dest=field,
            type=positive_float,
            default=getattr(_DEFAULTS, field),
            metavar="S",
            help=f"{text} (default: %(default)gs)",
        )
    for flag, field, metavar, text in LIMITS:
        run.add_argument(
            flag,
            dest=field,
            type=positive_int,
            default=getattr(_DEFAULTS, field),
            metavar=metavar,
            help=f"{text} (default: %(default)d)",
        )

    check_ = sub.add_parser(
        "check",
        help="validate the manifests and print a summary (like nginx -t)",
        description="Validate the manifests at PATH. Exit 0 and a one-line summary if valid, else 1 and every error.",
    )
    check_.add_argument("-c", "--config", required=True, metavar="PATH", help="manifest file or directory")

    add_route_tools(sub)
    status_ = sub.add_parser(
        "status",
        help="what a running gateway serves: generation, workers, listeners, certificates expiring soon",
        description="Ask the admin listener of a running `fsmfast run` (GET /status and /config) and print"
        " generation and state, workers (pid, uptime, RSS), listeners, certificates expiring within 30 days and"
        " the last reload's result. Exit 1 when the admin listener cannot be reached.",
    )
    status_.add_argument(
        "--admin-address",
        type=admin_address,
        default=_DEFAULTS.admin_address,
        metavar="HOST:PORT",
        help="the admin listener to ask (default: %(default)s)",
    )
    sub.add_parser("demo", help="run a self-contained demo (fsmfast demo --help)", add_help=False)
    return parser


def settings_from(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    workers = ns.workers
    if workers is None:
        workers = workers_from_env(parser)
    return Settings(
        config_path=os.path.abspath(ns.config),
        workers=workers,
        listen_address=ns.listen_address,
        pid_file=os.path.abspath(ns.pid_file) if ns.pid_file else None,
        access_log=ns.access_log,
        access_log_path=os.path.abspath(ns.access_log_path) if ns.access_log_path else None,
        access_log_format=ns.access_log_format,
        error_log_path=os.path.abspath(ns.error_log_path) if ns.error_log_path else None,
        admin_address=ns.admin_address,
        watch=ns.watch,
        user=ns.user,
        group=ns.group,
        worker_timeout=ns.worker_timeout,
        ratelimit_redis=ns.ratelimit_redis,
        ratelimit_redis_timeout=ns.ratelimit_redis_timeout,
        ratelimit_fail_closed=ns.ratelimit_fail == "closed",
        detailed_errors=ns.detailed_errors,
        graceful_timeout=ns.graceful_timeout,
        connect_timeout=ns.connect_timeout,
        response_timeout=ns.response_timeout,
        keepalive_timeout=ns.keepalive_timeout,
        header_timeout=ns.header_timeout,
        pool_idle_timeout=ns.pool_idle_timeout,
        body_timeout=ns.body_timeout,
        **{field: getattr(ns, field) for _, field, _, _ in LIMITS},
    )


def workers_from_env(parser: argparse.ArgumentParser) -> int:
    for name in WORKERS_ENV:
        value = os.environ.get(name)
        if value:
            try:
                return positive_int(value)
            except argparse.ArgumentTypeError:
                parser.error(f"${name} must be a positive integer, not {value!r}")
    return os.cpu_count() or 1


def _build_or_report(path: str) -> Build | None:
    """The build ``run`` would serve, or None after printing every error (``check``, ``routes``, ``explain``)."""
    from fsmfast.compile import build

    try:
        return build(path, 1)
    except ConfigError as e:
        n = len(e.issues)
        print(f"fsmfast: configuration is invalid ({n} error{'' if n == 1 else 's'}):", file=sys.stderr)
        for issue in e.issues:
            print(str(issue), file=sys.stderr)
    except OSError as e:
        print(f"fsmfast: cannot read configuration {path}: {e.strerror or e}", file=sys.stderr)
    return None


def check(path: str) -> int:
    """``fsmfast check``: the same build as ``run`` and reload, without serving."""
    result = _build_or_report(path)
    if result is None:
        return EXIT_CONFIG
    for warning in result.warnings:
        print(f"fsmfast: warning: {warning}", file=sys.stderr)
    print(result.summary)
    return EXIT_OK


def add_route_tools(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    routes = sub.add_parser(
        "routes",
        help="print the compiled route table, per port and hostname, in precedence order",
        description="Compile the manifests at PATH as `run` would and print every port's hostnames and rules,"
        " in the order the data plane tries them.",
    )
    routes.add_argument("-c", "--config", required=True, metavar="PATH", help="manifest file or directory")
    explain = sub.add_parser(
        "explain",
        help="show how one request would be routed, and why every other candidate does not match",
        description="Compile the manifests at PATH and walk one request through the data plane's router.",
    )
    explain.add_argument("-c", "--config", required=True, metavar="PATH", help="manifest file or directory")
    explain.add_argument("--port", required=True, type=positive_int, help="listener port the request arrives on")
    explain.add_argument("--host", required=True, help="Host header (a :port suffix is ignored, as when serving)")
    explain.add_argument(
        "--path",
        required=True,
        help="request-target as sent: a path, optionally with ?query (normalized as the worker does), an"
        " absolute-form http://host/path, or *",
    )
    explain.add_argument("--method", default="GET", help="request method (default: GET)")
    explain.add_argument(
        "--header", action="append", default=[], type=key_value, metavar="NAME=VALUE", help="a request header"
    )
    explain.add_argument(
        "--query", action="append", default=[], type=key_value, metavar="NAME=VALUE", help="a query parameter"
    )


def routes_or_explain(ns: argparse.Namespace) -> int:
    """``fsmfast routes`` / ``fsmfast explain``: the same build as ``run``, then the worker's router."""
    from fsmfast import explain

    result = _build_or_report(ns.config)
    if result is None:
        return EXIT_CONFIG
    if ns.command == "routes":
        sys.stdout.write(explain.render_routes(result.snapshot))
    else:
        text = explain.explain(result.snapshot, ns.port, ns.host, ns.path, ns.method, ns.header, ns.query)
        sys.stdout.write(text)
    return EXIT_OK


def status(address: str) -> int:
    if not address:
        print("fsmfast status: needs the admin listener's HOST:PORT (--admin-address)", file=sys.stderr)
        return EXIT_USAGE
    from fsmfast.admin.status import main as status_main

    return status_main(*split_admin_address(address))


def key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def positive_int(text: str) -> int:
    # isdecimal first: int() alone accepts "+4", "4_0" and surrounding whitespace.
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return int(text)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text!r}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text!r}")
    return value


def admin_address(text: str) -> str:
    """HOST:PORT ([v6]:PORT) with a literal address, or "" (off). A host name is refused: what the
    admin listener binds must be visible in the command line, never resolved at start."""
    if text == "":
        return ""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdecimal() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT (or empty to turn it off), not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the admin address must be a literal IP, not {host!r}") from None
    return f"[{addr}]:{int(port)}" if addr.version == 6 else f"{addr}:{int(port)}"


def split_admin_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def ip_literal(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an IPv4 or IPv6 address, not {text!r}") from None
