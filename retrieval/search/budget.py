"""How long a search may run, and whether its caller still wants the answer.

A :class:`Budget` holds a deadline (a :func:`time.monotonic` instant) and a cancel flag (a
:class:`threading.Event`, or anything with ``is_set()``). The searcher checks it between its
phases (embedding, filtering, vector search, keyword search, each re-ranking stage, reading the
hits) and the re-ranking stages check it inside their loops, so a search past its deadline stops
with :class:`~retrieval.errors.SearchTimeout` and a cancelled one with
:class:`~retrieval.errors.SearchCancelled`, within one step of a loop. A check costs a clock
read and an attribute read; the loops that call it do a vector product or more per check.

What is not interruptible: one call into the encoder (a batch of query texts, one image), one
SQL statement, one FAISS search. Each of those is bounded by the query builder's limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from ..errors import SearchCancelled, SearchTimeout


class CancelFlag(Protocol):
    """What a cancel flag needs: :class:`threading.Event` has it."""

    def is_set(self) -> bool:
        """Whether the caller gave up on the search."""
        ...


@dataclass(frozen=True)
class Budget:
    """A search's deadline (``time.monotonic()`` instant, None for none) and cancel flag."""

    deadline: float | None = None
    cancel: CancelFlag | None = None

    @classmethod
    def within(cls, seconds: float | None, cancel: CancelFlag | None = None) -> Budget:
        """A budget of ``seconds`` from now (None: no deadline)."""
        return cls(None if seconds is None else time.monotonic() + seconds, cancel)

    def check(self) -> None:
        """Raise if the caller cancelled the search or its deadline has passed."""
        if self.cancel is not None and self.cancel.is_set():
            raise SearchCancelled("the search was cancelled by its caller")
        if self.deadline is not None:
            over = time.monotonic() - self.deadline
            if over >= 0:
                raise SearchTimeout(f"the search ran past its deadline (by {over:.3f} s) and "
                                    "was stopped; narrow it (smaller k, fewer stages) or retry")

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once past); None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()


UNLIMITED = Budget()
