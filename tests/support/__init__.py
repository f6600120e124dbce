"""Helpers shared by the integration tests: certificates (``pki``), manifests (``manifests``), processes (``procs``).

Everything here drives real tools (the openssl CLI, gunicorn, ``python -m fsmfast``) the way a user would,
so a test that passes shows what a user would see.
"""
