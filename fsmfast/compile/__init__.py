"""Compiling validated manifests into the ``Snapshot`` the workers serve (``build``).

``fsmfast.config`` reads and validates each object on its own; this package resolves the objects
against each other and emits the snapshot, one job per module:

- ``build``: the entry point (``build(path, generation)``), all or nothing, deterministic output;
- ``index``, ``grants``: lookups by namespace and name, ReferenceGrant checks;
- ``frontends``: which listeners each port serves, their certificates and client trust;
- ``attach``: which HTTPRoutes are live on which listeners, for which hostnames;
- ``routetable``, ``rules``, ``route_knobs``: the virtual hosts of a port in Gateway API order, each
  rule's matches, filters and timeouts, and the fsmfast.io annotations' knobs;
- ``l4routes``: TLSRoutes and TCPRoutes; ``endpoints``: Service ports to ready endpoints;
- ``upstream_tls``: which TLS settings apply to each Service port (UpstreamTLSPolicy, BackendTLSPolicy);
- ``resilience``: which retry, health check, circuit breaking, load-balancing and session policies apply
  to each Service port, and the route rules' own retry and sessionPersistence;
- ``bundles``: CA texts joined into one PEM, remembering which Secret or ConfigMap each came from.
"""

from fsmfast.compile.build import DETAILED_ERRORS, Build, build

__all__ = ["DETAILED_ERRORS", "Build", "build"]
