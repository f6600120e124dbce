"""State shared by every worker of the machine (issue 19): the arena of atomic words the master
maps before it forks (``arena``), the compiled atomics and their twin (``_atomic``, ``atomic``),
and the master's stable slot numbers for endpoint keys (``slots``). Nothing is made unless a
feature asks for it, so a gateway that uses none of it pays nothing. See docs/shared-state.md."""
