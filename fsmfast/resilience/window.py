"""Counts per time bucket in shared words, for windows that slide over the whole machine (the circuit
breaker's and the retry budget's).

A bucket's count lives in one int64 arena word together with a tag naming the bucket (its epoch:
the time divided by the bucket's width, and whatever else its owner mixes in)::

    bit 63   0 (the word stays positive)
    62..28   tag    (35 bits)
    27..0    count  (28 bits, stops at 268,435,455)

A ring of N words serves every epoch: epoch ``e`` lives in word ``e % N``. Nobody sweeps old
buckets: whoever first counts into a word in a new epoch finds another tag there and starts the
word again at 1, with a compare-and-swap so that two processes doing it at once lose no count. A
reader counts a word only when its tag is the one expected for that place in the window, so a
bucket nobody wrote since it went stale reads as 0.
"""

from __future__ import annotations

from typing import Any

COUNT_BITS = 28
COUNT_MAX = (1 << COUNT_BITS) - 1
TAG_BITS = 63 - COUNT_BITS
TAG_MASK = (1 << TAG_BITS) - 1


def bump(cells: Any, i: int, tag: int, n: int = 1) -> None:
    """``n`` more in word ``i`` for ``tag`` (0 <= tag < 2**TAG_BITS)."""
    while True:
        word = cells.load(i)
        if word >> COUNT_BITS == tag:
            if word & COUNT_MAX == COUNT_MAX:
                return  # saturated: carrying into the tag would corrupt it
            new = word + min(n, COUNT_MAX - (word & COUNT_MAX))
        else:
            new = tag << COUNT_BITS | min(n, COUNT_MAX)  # a stale bucket (or a fresh arena): this epoch starts here
        if cells.cas(i, word, new):
            return


def count(word: int, tag: int) -> int:
    """The count ``word`` holds for ``tag``; 0 when it holds another bucket's."""
    return word & COUNT_MAX if word >> COUNT_BITS == tag else 0


def total(cells: Any, first: int, buckets: int, epoch: int, high: int = 0, mask: int = TAG_MASK) -> int:
    """The sum of the ``buckets`` words from ``first`` over the window ending with ``epoch`` (the
    current bucket and the ``buckets - 1`` before it), epoch ``e``'s tag being ``high | e & mask``."""
    n = 0
    for e in range(epoch - buckets + 1, epoch + 1):
        word = cells.load(first + e % buckets)
        if word >> COUNT_BITS == high | e & mask:
            n += word & COUNT_MAX
    return n
