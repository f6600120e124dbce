"""Metrics: what workers count on the request path, how the master reads it, and the exposition.

- ``counters``: the worker's counters, bumped by the compiled proxy core (compiled itself);
- ``shm``: the shared region a worker publishes them through (and beats its heartbeat in);
- ``blob``: the encoded form of one worker's cumulative counts;
- ``publish``: the worker tick's side (heartbeat, publishing when something changed);
- ``master``: the master's sum over live workers plus the retired counts of dead ones;
- ``exposition``: the Prometheus text and OpenMetrics renderings.
"""
