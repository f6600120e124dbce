"""Configuration files for the upstream and for each system under test, from one :class:`Scenario`.

Equivalence rules every proxy config keeps (bench/README.md explains each):
- one worker (nginx ``worker_processes 1``, haproxy ``nbthread 1``, fsmfast ``--workers 1``);
- keep-alive to clients and to the upstream (nginx: an ``upstream`` ``keepalive`` pool, HTTP/1.1,
  ``Connection ""``; haproxy: ``http-reuse always``; fsmfast: its per-worker pool, 64 idle max);
- no access log anywhere; X-Forwarded-For added everywhere; the Host header passed through;
- request bodies streamed, not spooled (nginx ``proxy_request_buffering off``; the others stream anyway),
  responses never spooled to disk (nginx ``proxy_max_temp_file_size 0``), nginx's proxy buffers 16 KiB like
  HAProxy's ``tune.bufsize`` (nginx's default is one memory page, 4 KiB);
- TLS: TLS 1.3 with TLS_AES_128_GCM_SHA256 on every TLS socket the harness configures (S2's upstream,
  S3's listeners), so no system negotiates a cheaper or dearer suite than another;
- S7 (resilience): the same three endpoints (three ports of the one upstream), round robin, an active check of
  ``GET /`` expecting 200 every HEALTH_INTERVAL s (out after MAX_FAILS failures), up to RETRIES retries on
  connection errors and 5xx answers, each system in its own words (nginx has no active check in its open
  source build: its passive ``max_fails``/``fail_timeout`` is the nearest it has);
- S8 (rate limit): one quota for every client on the route, ``scenario.rate_limit`` requests per second with as
  many admitted at once, refused with 429, nothing queued beyond what fsmfast's smallest backlog (1) allows:
  nginx ``limit_req`` keyed by ``$server_name`` with ``nodelay``, HAProxy a one-entry stick-table and
  ``sc_http_req_rate``, fsmfast a RateLimitPolicy on the HTTPRoute.
- S9 (fleet-wide rate limit): fsmfast's policy is S8's with ``mode: Global``, its quota in a redis-server the
  harness starts (bench/fleet.py); nginx and HAProxy have no Redis-backed limiter and get S8's config unchanged.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scenarios import (
    BIG_SIZE,
    HOST,
    ROUTES_HOSTS,
    ROUTES_PATHS,
    SMALL_BODY,
    Scenario,
    route_host,
    route_prefix,
)
from fsmfast.demo.pki import Pki, blog_pki
from tests.support import manifests as m  # the demo's manifests plus tls_secret

TLS_SUITE = "TLS_AES_128_GCM_SHA256"
KEEPALIVE_REQUESTS = 1_000_000
POOL_SIZE = 64  # idle upstream connections kept per worker: fsmfast's default pool_idle_limit

# S7: one set of resilience settings, written in each system's own terms below.
HEALTH_INTERVAL = 2  # s between active checks (HAProxy `inter`; fsmfast HealthCheckPolicy `interval`)
MAX_FAILS = 3  # failures before an endpoint is out (HAProxy `fall`, nginx `max_fails`, fsmfast `maxFails`)
FAIL_TIMEOUT = 10  # s: nginx's `fail_timeout` (its window for max_fails and how long a server stays out)
RETRIES = 2  # retries after the first try (fsmfast `numRetries`, HAProxy `retries`; nginx counts tries: 3)
RETRY_BACKOFF = 0.025  # s, fsmfast's `backoffBaseInterval` (nginx and HAProxy retry at once)


@dataclass(frozen=True)
class Certs:
    blog: Pki  # CA CN=flomesh.io, server cert CN=foo.example.com (RSA 2048, no SAN): the S2 upstream
    ecdsa_cert: Path  # S3 listener certificate: ECDSA P-256, CN and SAN foo.example.com, self-signed
    ecdsa_key: Path
    ecdsa_pem: Path  # cert + key in one file, for haproxy's `crt`


def make_certs(dir: Path) -> Certs:
    blog = blog_pki(dir / "blog")
    cert, key, pem = dir / "ecdsa-cert.pem", dir / "ecdsa-key.pem", dir / "ecdsa.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "365", "-subj", f"/CN={HOST}",
            "-addext", f"subjectAltName=DNS:{HOST}",
        ],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
    )  # fmt: skip
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return Certs(blog=blog, ecdsa_cert=cert, ecdsa_key=key, ecdsa_pem=pem)


@dataclass(frozen=True)
class UpstreamPorts:
    http: int  # `return 200` (12 bytes), /1m.bin, /upload
    https: int  # the same over TLS with the blog's server certificate (S2)
    sink: int  # where /upload's read body ends up: a `return 200` that gets a bodiless request
    status: int  # stub_status, to count the connections the upstream accepts per run
    # More ports serving exactly what ``http`` serves: S7's second and third endpoints. One upstream process
    # on three ports, so the upstream's own cost stays that of S1.
    more_http: tuple[int, ...] = ()

    def http_endpoints(self, n: int) -> tuple[int, ...]:
        """The ports of ``n`` plain HTTP endpoints: ``http`` first, then ``more_http``."""
        ports = (self.http, *self.more_http)
        if n > len(ports):
            raise ValueError(f"{n} endpoints wanted, the upstream listens on {len(ports)} HTTP ports")
        return ports[:n]


def upstream_ports(free_port: Callable[[], int]) -> UpstreamPorts:
    """A port for each thing the upstream serves, and two more HTTP ports for S7's extra endpoints."""
    return UpstreamPorts(free_port(), free_port(), free_port(), free_port(), more_http=(free_port(), free_port()))


def _nginx_common(prefix: Path) -> str:
    """Top of every nginx config the harness writes: all paths under ``prefix``, never the system's."""
    return f"""\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 10000;
events {{ worker_connections 4096; }}
"""


def _nginx_http_common(prefix: Path) -> str:
    return f"""\
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests {KEEPALIVE_REQUESTS};
    keepalive_timeout 300s;
    sendfile on;
    tcp_nodelay on;
    default_type text/plain;
"""


def write_upstream(prefix: Path, ports: UpstreamPorts, certs: Certs) -> Path:
    """The upstream: a separate nginx (1 worker) in its own prefix: 12-byte `return 200`, a static 1 MiB file,
    and ``/upload``, which reads the whole 1 MiB body into memory before answering 200."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    www = prefix / "www"
    www.mkdir(exist_ok=True)
    big = www / "1m.bin"
    big.write_bytes(bytes(range(256)) * (BIG_SIZE // 256))
    # The worker runs unprivileged when nginx starts as root: it must be able to read the file.
    for path, mode in ((prefix, 0o711), (www, 0o755), (big, 0o644)):
        path.chmod(mode)
    small = SMALL_BODY.decode()
    more = "".join(f"\n        listen 127.0.0.1:{p} backlog=4096;" for p in ports.more_http)
    conf = prefix / "nginx.conf"
    conf.write_text(
        _nginx_common(prefix)
        + f"""\
http {{
{_nginx_http_common(prefix)}
    # /upload: the proxy module reads the client body completely (into one 2 MiB memory buffer) before it
    # sends the bodiless request to the sink; a plain `return` would only discard the body. The sink pool
    # keeps more idle connections than any run has clients, so stub_status "accepts" counts only new
    # connections from the system under test.
    upstream sink {{ server 127.0.0.1:{ports.sink}; keepalive 256; keepalive_requests {KEEPALIVE_REQUESTS}; }}

    server {{
        listen 127.0.0.1:{ports.http} backlog=4096;{more}
        listen 127.0.0.1:{ports.https} ssl backlog=4096;
        ssl_certificate {certs.blog.server_cert};
        ssl_certificate_key {certs.blog.server_key};
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites {TLS_SUITE};
        ssl_session_cache shared:UP:10m;
        root {www};

        location / {{ return 200 "{small}"; }}
        location = /1m.bin {{ default_type application/octet-stream; }}
        location = /upload {{
            client_max_body_size 2m;
            client_body_buffer_size 2m;
            client_body_in_single_buffer on;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            proxy_http_version 1.1;
            proxy_pass http://sink/;
        }}
    }}
    server {{
        listen 127.0.0.1:{ports.sink};
        location / {{ return 200 "{small}"; }}
    }}
    server {{
        listen 127.0.0.1:{ports.status};
        location / {{ stub_status; }}
    }}
}}
"""
    )
    return conf


# --- nginx as the proxy -----------------------------------------------------------------------------


def write_nginx(prefix: Path, scenario: Scenario, port: int, up: UpstreamPorts, certs: Certs) -> Path:
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    listen = f"127.0.0.1:{port}"
    tls = ""
    if scenario.listener_tls:
        listen += " ssl"
        tls = f"""\
    ssl_certificate {certs.ecdsa_cert};
    ssl_certificate_key {certs.ecdsa_key};
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites {TLS_SUITE};
    ssl_session_cache shared:SSL:10m;
"""
    if scenario.upstream_tls:
        upstream = f"server 127.0.0.1:{up.https};"
        proxy = f"""\
            proxy_pass https://be;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_trusted_certificate {certs.blog.ca_cert};
            proxy_ssl_name {HOST};
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_conf_command Ciphersuites {TLS_SUITE};"""
    elif scenario.resilience:
        # Round robin is nginx's default. Open source nginx has no active check: max_fails/fail_timeout take
        # a server out after MAX_FAILS failed tries within FAIL_TIMEOUT s, for FAIL_TIMEOUT s. Errors,
        # timeouts and 5xx answers are tried on the next server, up to RETRIES + 1 tries in all.
        upstream = "\n        ".join(
            f"server 127.0.0.1:{p} max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT}s;"
            for p in up.http_endpoints(scenario.endpoints)
        )
        proxy = f"""\
            proxy_pass http://be;
            proxy_next_upstream error timeout http_500 http_502 http_503 http_504;
            proxy_next_upstream_tries {RETRIES + 1};"""
    else:
        upstream = f"server 127.0.0.1:{up.http};"
        proxy = "            proxy_pass http://be;"
    zone = ""
    if scenario.rate_limit:
        # One zone and a key every request shares ($server_name): one quota for all clients, as fsmfast's
        # policy without `key`. nginx admits 1 + burst at once (nodelay: no waiting), fsmfast `burst`.
        zone = f"    limit_req_zone $server_name zone=rl:1m rate={scenario.rate_limit}r/s;\n    limit_req_status 429;\n"
        burst = f" burst={scenario.rate_limit - 1}" if scenario.rate_limit > 1 else ""
        proxy += f"\n            limit_req zone=rl{burst} nodelay;"

    if scenario.many_routes:
        servers = []
        for i in range(ROUTES_HOSTS):
            locations = "\n".join(
                f"        location {route_prefix(j)}/ {{ proxy_pass http://be; }}" for j in range(ROUTES_PATHS)
            )
            servers.append(
                f"    server {{\n        listen {listen};\n        server_name {route_host(i)};\n{locations}\n    }}"
            )
        vhosts = "\n".join(servers)
    else:
        vhosts = f"""\
    server {{
        listen {listen};
        server_name {HOST};
        location / {{
{proxy}
        }}
    }}"""

    conf = prefix / "nginx.conf"
    conf.write_text(
        _nginx_common(prefix)
        + f"""\
http {{
{_nginx_http_common(prefix)}
    server_names_hash_max_size 4096;
    server_names_hash_bucket_size 64;
    client_max_body_size 2m;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_request_buffering off;
    proxy_max_temp_file_size 0;
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    proxy_busy_buffers_size 32k;
{zone}{tls}
    upstream be {{
        {upstream}
        keepalive {POOL_SIZE};
        keepalive_requests {KEEPALIVE_REQUESTS};
        keepalive_timeout 300s;
    }}

    # Unknown hosts: 404, like fsmfast (no route for the host) and haproxy's be_404.
    server {{
        listen {listen} default_server;
        server_name _;
        return 404;
    }}
{vhosts}
}}
"""
    )
    return conf


# --- haproxy ----------------------------------------------------------------------------------------


def write_haproxy(dir: Path, scenario: Scenario, port: int, up: UpstreamPorts, certs: Certs) -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    bind = f"127.0.0.1:{port}"
    if scenario.listener_tls:
        bind += f" ssl crt {certs.ecdsa_pem}"
    if scenario.upstream_tls:
        server = f"server up 127.0.0.1:{up.https} ssl verify required ca-file {certs.blog.ca_cert} verifyhost {HOST}"
    elif scenario.resilience:
        # An HTTP check of GET / expecting 200 every HEALTH_INTERVAL s, out after MAX_FAILS failures, back
        # after one success; RETRIES retries, each on another server (redispatch), on connection failures and
        # 5xx answers (HAProxy 2.6 names the codes it can retry on: no "5xx" class).
        servers = "\n    ".join(
            f"server up{i} 127.0.0.1:{p} check inter {HEALTH_INTERVAL}s fall {MAX_FAILS} rise 1"
            for i, p in enumerate(up.http_endpoints(scenario.endpoints))
        )
        server = f"""\
balance roundrobin
    option httpchk GET /
    http-check expect status 200
    retries {RETRIES}
    option redispatch
    retry-on conn-failure empty-response response-timeout 500 501 502 503 504
    {servers}"""
    else:
        server = f"server up 127.0.0.1:{up.http}"
    if scenario.rate_limit:
        # One counter for all clients (a one-entry table, a constant key): HAProxy counts requests over a sliding
        # second rather than refilling a bucket, so at most rate_limit pass in any second; the rest get 429.
        server = f"""\
stick-table type integer size 1 expire 10s store http_req_rate(1s)
    http-request track-sc0 int(0)
    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {scenario.rate_limit} }}
    {server}"""
    if scenario.many_routes:
        # One lookup on "host/path" in a prefix tree (map_beg), as haproxy-ingress routes host+path.
        routes = dir / "routes.map"
        routes.write_text(
            "".join(f"{route_host(i)}{route_prefix(j)}/ be\n" for i in range(ROUTES_HOSTS) for j in range(ROUTES_PATHS))
        )
        routing = f"    use_backend %[base,map_beg({routes},be_404)]"
    else:
        routing = f"    use_backend be if {{ hdr(host) -i {HOST} }}"
    conf = dir / "haproxy.cfg"
    conf.write_text(
        f"""\
global
    nbthread 1
    maxconn 4096
    ssl-default-bind-ciphersuites {TLS_SUITE}
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-ciphersuites {TLS_SUITE}
    ssl-default-server-options ssl-min-ver TLSv1.3

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 10s
    timeout client 300s
    timeout server 60s
    timeout http-request 60s
    timeout http-keep-alive 300s

frontend fe
    bind {bind}
{routing}
    default_backend be_404

backend be
    {server}

backend be_404
    http-request return status 404
"""
    )
    return conf


# --- fsmfast ----------------------------------------------------------------------------------------


def _gateway(port: int, tls_secret: str | None) -> str:
    listener: dict = {
        "name": "http",
        "protocol": "HTTP",
        "port": port,
        "allowedRoutes": {"namespaces": {"from": "Same"}},
    }
    if tls_secret is not None:
        listener = {
            "name": "https",
            "protocol": "HTTPS",
            "port": port,
            "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": tls_secret}]},
            "allowedRoutes": {"namespaces": {"from": "Same"}},
        }
    return m.to_yaml(
        {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "Gateway",
            "metadata": {"name": m.GATEWAY_NAME, "namespace": m.NAMESPACE},
            "spec": {"gatewayClassName": m.GATEWAY_CLASS, "listeners": [listener]},
        }
    )


def _route(name: str, hostname: str, prefixes: list[str], service: str, service_port: int) -> str:
    return m.to_yaml(
        {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": m.NAMESPACE},
            "spec": {
                "parentRefs": [{"name": m.GATEWAY_NAME}],
                "hostnames": [hostname],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": p}}],
                        "backendRefs": [{"name": service, "port": service_port}],
                    }
                    for p in prefixes
                ],
            },
        }
    )


def _resilient_service(service: str, service_port: int, ports: tuple[int, ...]) -> list[str]:
    """S7's Service: one named port whose target port resolves differently in each of its EndpointSlices (as
    for pods listening on different container ports), so every endpoint is on 127.0.0.1; and FSM's policies
    on that port: round robin, the active health check and the retries of the other systems' configs."""
    svc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service, "namespace": m.NAMESPACE},
        "spec": {
            "selector": {"app": service},
            "ports": [{"name": "http", "port": service_port, "protocol": "TCP", "targetPort": "http"}],
        },
    }
    docs = [m.to_yaml(svc)]
    for i, port in enumerate(ports):
        docs.append(
            m.to_yaml(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{service}-{i}",
                        "namespace": m.NAMESPACE,
                        "labels": {"kubernetes.io/service-name": service},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                    "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
                }
            )
        )
    configs: dict[str, dict[str, Any]] = {
        "LoadBalancerPolicy": {"port": service_port, "type": "RoundRobinLoadBalancer"},
        "HealthCheckPolicy": {
            "port": service_port,
            "config": {
                "interval": HEALTH_INTERVAL,
                "maxFails": MAX_FAILS,
                "path": "/",
                "matches": [{"statusCodes": [200]}],
            },
        },
        "RetryPolicy": {
            "port": service_port,
            "config": {"retryOn": ["5xx"], "numRetries": RETRIES, "backoffBaseInterval": RETRY_BACKOFF},
        },
    }
    for kind, port_entry in configs.items():
        docs.append(
            m.to_yaml(
                {
                    "apiVersion": "gateway.flomesh.io/v1alpha1",
                    "kind": kind,
                    "metadata": {"name": f"{service}-{kind.removesuffix('Policy').lower()}", "namespace": m.NAMESPACE},
                    "spec": {"targetRef": {"group": "", "kind": "Service", "name": service}, "ports": [port_entry]},
                }
            )
        )
    return docs


def _rate_limit_policy(route: str, rate: int, mode: str = "Local") -> str:
    """S8's RateLimitPolicy on every request of ``route``: ``rate`` per second, as many at once, one quota for all
    clients (no `key`); backlog 1, the least fsmfast allows (nginx and HAProxy hold none back). S9's is the same
    with ``mode: Global`` (its quota in Redis)."""
    return m.to_yaml(
        {
            "apiVersion": "gateway.flomesh.io/v1alpha1",
            "kind": "RateLimitPolicy",
            "metadata": {"name": f"{route}-ratelimit", "namespace": m.NAMESPACE},
            "spec": {
                "targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route},
                "http": [
                    {
                        "match": {"path": {"type": "PathPrefix", "value": "/"}},
                        "config": {
                            "mode": mode,
                            "requests": rate,
                            "statTimeWindow": 1,
                            "burst": rate,
                            "backlog": 1,
                            "responseStatusCode": 429,
                        },
                    }
                ],
            },
        }
    )


def write_fsmfast(dir: Path, scenario: Scenario, port: int, up: UpstreamPorts, certs: Certs) -> Path:
    """Gateway API manifests (plus the FSM UpstreamTLSPolicy for S2, the resilience policies for S7, the
    RateLimitPolicy for S8 and S9) in ``dir``; ``fsmfast run -c dir`` (S9: with ``--ratelimit-redis``)."""
    dir.mkdir(parents=True, exist_ok=True)
    service, service_port = "upstream", 80
    docs = []
    if scenario.listener_tls:
        docs.append(m.tls_secret("listener-cert", certs.ecdsa_cert, certs.ecdsa_key))
    docs.append(_gateway(port, "listener-cert" if scenario.listener_tls else None))
    if scenario.upstream_tls:
        service, service_port = "upstream-tls", 443
        docs.append(m.service(service, service_port, up.https))
        docs.append(m.endpoint_slice(service, up.https))
        docs.append(m.ca_secret("upstream-ca", certs.blog.ca_cert))
        docs.append(m.upstream_tls_policy(secret="upstream-ca", port=service_port, service=service))
    elif scenario.resilience:
        docs += _resilient_service(service, service_port, up.http_endpoints(scenario.endpoints))
    else:
        docs.append(m.service(service, service_port, up.http))
        docs.append(m.endpoint_slice(service, up.http))
    (dir / "gateway.yaml").write_text(m.documents(*docs))
    if scenario.many_routes:
        prefixes = [route_prefix(j) for j in range(ROUTES_PATHS)]
        routes = [_route(f"route-{i:04d}", route_host(i), prefixes, service, service_port) for i in range(ROUTES_HOSTS)]
    else:
        routes = [_route("route-foo", HOST, ["/"], service, service_port)]
        if scenario.rate_limit:
            mode = "Global" if scenario.fleet_limit else "Local"
            routes.append(_rate_limit_policy("route-foo", scenario.rate_limit, mode))
    (dir / "routes.yaml").write_text(m.documents(*routes))
    return dir
