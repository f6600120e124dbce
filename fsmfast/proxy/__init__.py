"""The HTTP data plane: client and upstream protocols, routing (the HTTP/1 codec is fsmfast.codec).

Four of its modules are compiled by Cython from their own source (see fsmfast/_compiled.py).
"""
