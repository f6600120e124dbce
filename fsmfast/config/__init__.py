"""Reading and validating Kubernetes manifests into a typed model.

One job per module, in data-flow order:

- ``sources``: find the files of a path (file or non-recursive directory) and split YAML documents;
- ``model``: msgspec Structs for the kinds fsmfast reads, with the CRD defaults;
- ``decode``: raw YAML value -> model Struct, reporting every type error and unknown field;
- ``checks``: per-object rules types cannot express (paths, hostnames, XOR fields, base64);
- ``loader``: documents -> ``Manifests`` (kinds, versions, metadata, duplicates, unknown kinds);
- ``checks``, ``httproute``, ``listenerchecks``: per-object rules for routes, listener protocols
  and TLS, TLSRoute, TCPRoute and GatewayTLSPolicy; ``hostnames``: hostname validation,
  intersection and specificity; ``duration``: Gateway API durations.

Resolving objects against each other and building the snapshot is ``fsmfast.compile``'s job.

Problems are collected in ``issues.Issues`` as ``fsmfast.errors.ConfigIssue``: errors make
the configuration invalid, warnings are reported and the rest is served.
"""
