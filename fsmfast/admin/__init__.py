"""The admin listener, served by the master on loopback (never a data-plane port).

- ``server``: the small HTTP/1.1 server the master's selector loop drives;
- ``endpoints``: what /healthz, /readyz, /metrics, /config and /status answer;
- ``dump``: the /config document, built from the snapshot with no key, PEM or Secret data;
- ``status``: ``fsmfast status``, the same for a person, read over HTTP from the admin listener.
"""
