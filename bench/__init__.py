"""fsmfast's benchmark harness: fsmfast, nginx and HAProxy side by side, in one run, on loopback.

``python -m bench`` (or ``make bench``) runs the scenarios S1–S9 against all three proxies and the
upstream directly, alternating systems round by round, and writes a Markdown table (stdout), a JSON
record and a PNG chart into ``bench/results/``. ``python -m bench lookup`` runs the route-lookup
micro-benchmark (``bench/route_lookup.py``). Method and fairness rules: ``bench/README.md``.
"""
