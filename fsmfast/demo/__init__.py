"""The founding scenario on one machine: ``fsmfast demo`` and the parts it is made of.

- ``pki``: the blog's CA and server certificate (its openssl commands, or ``cryptography``);
- ``manifests``: the blog's Gateway, HTTPRoute, Service, EndpointSlice, Secret and UpstreamTLSPolicy as YAML;
- ``procs``: ports, process groups, waiting for a (TLS) port, ``fsmfast run`` as a child;
- ``upstream``: the HTTPS upstream (httpbin on gunicorn, or a built-in echo server);
- ``run``: the demo itself.

The integration tests and the benchmark harness build their set-ups from these same parts, so the demo shows
what the tests check. Nothing here is imported by the gateway itself.
"""

from __future__ import annotations


class SetupError(RuntimeError):
    """A certificate, file or process could not be set up; the message says what happened and what to do."""
