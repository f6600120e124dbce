"""The HTTP data plane: client and upstream protocols, routing, header rewriting.

Four of its modules are compiled by Cython from their own source (see fsmfast/_compiled.py).
"""
