"""Reading and validating Kubernetes manifests into a typed model.

One job per module, in data-flow order:

- ``sources``: find the files of a path (file or non-recursive directory) and split YAML documents;
- ``model``: msgspec Structs for the kinds fsmfast reads, with the CRD defaults;
- ``decode``: raw YAML value -> model Struct, reporting every type error and unknown field;
- ``checks``: per-object rules types cannot express (paths, hostnames, XOR fields, base64);
- ``loader``: documents -> ``Manifests`` (kinds, versions, metadata, duplicates, unknown kinds);
- ``index``, ``hostnames``, ``attach``, ``endpoints``, ``tls``, ``pem``: cross-object
  resolution used by ``fsmfast.compile`` to build the snapshot.
- ``frontends`` (listeners per port, certificates via ``certs``, client trust), ``l4routes``
  (TLSRoute/TCPRoute), ``grants``; their per-object rules are in ``listenerchecks``.

Problems are collected in ``issues.Issues`` as ``fsmfast.errors.ConfigIssue``: errors make
the configuration invalid, warnings are reported and the rest is served.
"""
