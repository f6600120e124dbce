"""Everything TLS, for both ends of the gateway.

- ``certs``, ``pem``: what a certificate Secret holds and whether it loads (used when compiling,
  and by the worker to load the same material the same way);
- ``listener``: listener certificates by SNI, client-certificate trust, the handshake of
  terminating listeners (HTTPS, TLS Terminate) and the passthrough dispatcher's helpers;
- ``upstream``: one client context per upstream policy and endpoint, with session resumption;
- ``link``: the TLS link between a TCP connection and the app protocol above it (compiled);
- ``_records`` (compiled) and ``records`` (its pure-Python twin): sealing and opening records;
- ``clienthello``: reading the SNI of a ClientHello without terminating (passthrough);
- ``inventory``: every certificate a snapshot serves or trusts, for /config, ``fsmfast status`` and
  the expiry metric.
"""
