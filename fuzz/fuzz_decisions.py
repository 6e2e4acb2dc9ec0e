"""Answering decisions: what the application says to each decision event.

:class:`Decisions` extends :class:`~fuzz_actions.Actions` and is the base of
the harness's ``Driver``. :meth:`Decisions.decide` reads the kind of answer
(and its parameters) from the decision bytes, applies it, records it as an
:class:`~fuzz_replies.Answer` for the replay and checks the replies it
queued (:meth:`Decisions.check_answer`). :meth:`Decisions._misuse` probes
the API with wrong calls first.
"""

from __future__ import annotations

from fuzz_actions import Actions
from fuzz_input import _TLS, CHALLENGES, ENHANCED_TAILS, TEXTS, USERS
from fuzz_replies import Answer, InvariantError

from smtp_proto import AuthAttempt, Event, Hello, LocalProtocolError, MessageComplete, Reply

__all__ = ["Decisions"]

_DECISION_KINDS = 10  # see Decisions.decide
_MISUSE_KINDS = 9  # see Decisions._misuse


class Decisions(Actions):
    """The decision-answering part of the ``Driver``."""

    answers: list[Answer]
    finishing: bool

    def decide(self, ev: Event) -> bool:
        """Answer the pending ``ev``; ``False`` means "later" (feed more first)."""
        conn = self.conn
        lmtp_message = isinstance(ev, MessageComplete) and self.cfg.lmtp
        recipients = len(conn.session.envelope.rcpt_to)
        kind = self.pick(_DECISION_KINDS)
        if kind == 6:
            if not self.finishing:
                if self.trace is not None:
                    self.trace("(decision deferred)")
                self.deferred = True
                return False
            kind = 0
        self.deferred = False
        answer_twice = False
        if kind == 7:
            answer_twice = self._misuse(ev)
            kind = 0
        if kind == 0:
            answer = Answer("accept")
        elif kind == 1:
            code = 200 + self.pick(100)
            kwargs = {
                "text": TEXTS[self.pick(len(TEXTS))], "code": code,
                "enhanced": self.enhanced(code), "user": USERS[self.pick(len(USERS))],
            }
            answer = Answer("accept", (), tuple(kwargs.items()))
        elif kind in (2, 3, 4, 9):
            code = 421 if kind == 9 else 400 + self.pick(200)
            kwargs = {}
            if kind in (3, 4):
                kwargs = {"text": TEXTS[self.pick(len(TEXTS))], "enhanced": self.enhanced(code)}
            if kind == 4:
                kwargs["challenge"] = CHALLENGES[self.pick(len(CHALLENGES))]
            answer = Answer("reject", (code,), tuple(kwargs.items()))
        elif kind == 5:
            if not lmtp_message:
                # Deliberate misuse: only an LMTP MessageComplete takes this.
                self.misuse_expect(LocalProtocolError, conn.answer_recipients, [])
                answer = Answer("accept")
            else:
                replies = []
                for _ in range(recipients):
                    code = (250, 450, 550)[self.pick(3)] + self.pick(50)
                    replies.append(Reply(code, TEXTS[self.pick(len(TEXTS))],
                                         self.enhanced(code)))
                answer = Answer("answer_recipients", (tuple(replies),))
        else:  # 8: the server shuts down while the application decides
            self.shutdown(Answer("shutdown", ("Service shutting down", 421)))
            self.answers.append(Answer("shutdown", ("Service shutting down", 421)))
            return True
        if self.trace is not None:
            self.trace(f"{answer.method}{answer.args}{dict(answer.kwargs)}")
        self.flush()
        answer.apply(conn)
        self.answers.append(answer)
        if conn.pending is not None:
            raise InvariantError(f"{ev!r} still pending after {answer.method}()")
        self.check_answer(ev, answer, self.flush(), recipients)
        if answer_twice:  # the decision is answered: no second answer
            self.misuse_expect(LocalProtocolError, conn.accept)
            self.misuse_expect(LocalProtocolError, conn.reject, 550)
        return True

    def enhanced(self, code: int) -> str | None:
        tail = ENHANCED_TAILS[self.pick(len(ENHANCED_TAILS))]
        return None if tail is None else f"{code // 100}.{tail}"

    def check_answer(self, ev: Event, answer: Answer, replies: list[tuple[int, list[bytes]]],
                     recipients: int) -> None:
        """The replies an answer queued: the code asked for, once per recipient."""
        kwargs = dict(answer.kwargs)
        if answer.method == "answer_recipients":
            replies_arg = answer.args[0]
            assert isinstance(replies_arg, tuple)
            expected = [r.code for r in replies_arg]
        else:
            if answer.method == "accept":
                code = kwargs.get("code", 250)
                assert isinstance(code, int)
                if isinstance(ev, Hello):
                    code = 250
                elif isinstance(ev, AuthAttempt):
                    code = 220 if ev.mechanism == "XCLIENT" else (235 if code == 250 else code)
            else:
                code = answer.args[0]
                assert isinstance(code, int)
                if (isinstance(ev, AuthAttempt) and ev.mechanism == "XOAUTH2"
                        and kwargs.get("challenge") is not None and code != 421):
                    code = 334
            per_recipient = isinstance(ev, MessageComplete) and self.cfg.lmtp and code != 421
            expected = [code] * (max(recipients, 1) if per_recipient else 1)
        got = [code for code, _ in replies[: len(expected)]]
        if got != expected:
            raise InvariantError(f"{answer} to {ev!r} queued replies {got}, expected {expected}")

    def _misuse(self, ev: Event) -> bool:
        """Call the API wrongly on purpose; each call must raise and change nothing.
        ``True``: probe the second answer to the decision after it is answered."""
        conn = self.conn
        probe = self.pick(_MISUSE_KINDS)
        if self.trace is not None:
            self.trace(f"(misuse probe {probe})")
        self.flush()
        if probe == 0:
            self.misuse_expect(ValueError, conn.accept, code=550)
        elif probe == 1:
            self.misuse_expect(ValueError, conn.reject, 250)
        elif probe == 2:
            too_many = [Reply(250, "OK")] * (len(conn.session.envelope.rcpt_to) + 1)
            self.misuse_expect(LocalProtocolError, conn.answer_recipients, too_many)
        elif probe == 3:
            self.misuse_expect(LocalProtocolError, conn.send_greeting)
        elif probe == 4:
            self.misuse_expect(LocalProtocolError, conn.tls_established, _TLS)
        elif probe == 5:
            self.misuse_expect(ValueError, conn.reject, 550, enhanced="2.0.0")
        elif probe == 6:
            if not isinstance(ev, Hello):  # documented: accept() ignores them for Hello
                self.misuse_expect(ValueError, conn.accept, enhanced="5.1.1")
        elif probe == 7:
            self.misuse_expect(ValueError, conn.reject, 451, "text", "4.1000.1")
        return probe == 8

