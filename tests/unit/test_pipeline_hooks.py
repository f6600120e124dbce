"""The pipeline's policy hooks (fsmfast.pipeline.hooks.run): the first answer wins, and a wait is not
an answer, so the policies after it are still asked and their answer comes after the wait."""

from __future__ import annotations

from typing import Any

from fsmfast.pipeline import hooks
from fsmfast.pipeline.decision import Delayed, LocalReply

REQUEST = hooks.PolicyRequest(b"GET", b"h", b"/", b"/", [], b"127.0.0.1", None)


def policy(answer: Any, asked: list[str], name: str) -> hooks.Policy:
    def ask(request: hooks.PolicyRequest) -> Any:
        asked.append(name)
        return answer() if callable(answer) else answer

    return ask


def test_the_first_answer_wins_and_the_rest_are_not_asked() -> None:
    asked: list[str] = []
    deny = LocalReply(403, "no", "access_denied")
    result = hooks.run([policy(None, asked, "a"), policy(deny, asked, "b"), policy(None, asked, "c")], REQUEST)
    assert result is deny and asked == ["a", "b"]
    assert hooks.run([policy(None, asked, "d")], REQUEST) is None


def test_a_wait_lets_the_later_policies_answer_after_it() -> None:
    asked: list[str] = []
    abort = LocalReply(503, "fault", "fault_injected")
    result = hooks.run([policy(lambda: Delayed(0.5, None), asked, "backlog"), policy(abort, asked, "fault")], REQUEST)
    assert isinstance(result, Delayed) and result.seconds == 0.5 and result.then is abort
    assert asked == ["backlog", "fault"]


def test_waits_add_up_to_the_longest_and_keep_the_one_future() -> None:
    future = object()
    result = hooks.run(
        [
            policy(lambda: Delayed(0.2, None, future, len), [], "fleet"),
            policy(lambda: Delayed(0.7, None), [], "fault"),
        ],
        REQUEST,
    )
    assert isinstance(result, Delayed) and result.seconds == 0.7 and result.future is future
    assert result.resolve is len and result.then is None
