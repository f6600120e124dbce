"""The request pipeline: the stages every request goes through, shared by the worker and ``fsmfast explain``.

1. read and validate the head: ``fsmfast.proxy.downstream`` (the two readers and ``_request``);
2. normalize the target: ``target`` (origin-form, absolute-form, ``*``, CONNECT);
3. route: ``route.find`` (host table, then the first rule whose match holds);
4. policy hooks, per route then per backend: ``hooks`` (empty lists today, run only when not);
5. choose a backend: ``route.choose`` (redirect, hooks, weighted pick);
6. forward: ``fsmfast.proxy.exchange`` with the chosen ``Choice``.

Each stage answers with a plain value from ``decision``: a ``Choice`` (forward to this backend
with this plan: the rule's own precomputed object, so the plain path allocates nothing), a
``LocalReply`` or a ``Redirect``. The worker applies the value to its ``Exchange``; ``explain``
prints it. ``route`` is compiled (a C call from the compiled client side, see _compiled.py); the
rest are plain Python, called only for requests that are not plain origin-form ones.
"""
