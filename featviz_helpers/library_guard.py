"""Keeping exercise code away from the library copies of the methods.

An exercise asks the student to write a method from scratch. Its graded checks run the
student's function inside :func:`library_copies_blocked`; there, every function marked
with :func:`library_copy` raises :class:`LibraryCopyUsed` instead of computing, however it
was imported or renamed. Outside that block (the notebooks' later sections, the checks'
own reference answers) nothing changes. The block is per thread.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Iterator

__all__ = ["LibraryCopyUsed", "library_copy", "is_library_copy", "library_copies_blocked",
           "refuse_if_blocked"]

_state = threading.local()


class LibraryCopyUsed(AssertionError):
    """An exercise's function called a library copy instead of implementing the method."""


def refuse_if_blocked(name: str) -> None:
    """Raise :class:`LibraryCopyUsed` if exercise code is running in this thread."""
    exercise = getattr(_state, "exercise", None)
    if exercise is not None:
        raise LibraryCopyUsed(
            f"{exercise} called the library copy {name}. The exercise is to implement the "
            "method yourself: plumbing (hooks.capture, hooks.preserved_state, models.*, "
            "torch) is allowed, the finished method from featviz_helpers is not."
        )


def library_copy(fn: Callable) -> Callable:
    """Mark ``fn`` as a library copy of a method that an exercise asks students to write."""
    # The public name, e.g. methods.saliency (not methods.gradients.saliency): the name the
    # notebooks call it by.
    parts = fn.__module__.split(".")
    module = parts[1] if parts[0] == "featviz_helpers" and len(parts) > 1 else parts[-1]
    name = f"{module}.{fn.__name__}"

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        refuse_if_blocked(name)
        return fn(*args, **kwargs)

    wrapper.library_copy_name = name
    return wrapper


def is_library_copy(fn) -> bool:
    """Whether ``fn`` is marked with :func:`library_copy`."""
    return isinstance(getattr(fn, "library_copy_name", None), str)


@contextlib.contextmanager
def library_copies_blocked(exercise: str) -> Iterator[None]:
    """Inside the block, in this thread, every :func:`library_copy` refuses to run.

    ``exercise`` names the code running (e.g. ``"your my_saliency"``) for the message.
    """
    previous = getattr(_state, "exercise", None)
    _state.exercise = exercise
    try:
        yield
    finally:
        _state.exercise = previous
