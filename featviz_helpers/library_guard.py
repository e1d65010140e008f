"""Keeping exercise code away from the library copies of the methods.

An exercise asks the student to write a method from scratch. Its graded checks run the
student's function inside :func:`library_copies_blocked`; there, every library copy raises
:class:`LibraryCopyUsed` instead of computing, however it is reached. The refusal is in the
function's own body (its first statement calls :func:`refuse_if_blocked`), not in a wrapper
around it, so there is no unguarded copy to find: not through ``__wrapped__``,
``inspect.unwrap``, a closure, or a reloaded module, whose functions carry the same first
statement. The private helpers that hold a method's core (the ReLU rules' backward, the
masked forward passes of occlusion, the checks' reference answers) begin the same way. Outside
the block (the notebooks' later sections, the checks' own reference answers) nothing
changes. The block holds for every thread of the process (a thread started by exercise code
is refused too); :func:`library_copies_blocked` also refuses exercise code that switched the
guard off or replaced it and left it so.

What no check inside the process can refuse is code written to defeat it on purpose —
switching the guard off and back on around a call, rebuilding a function's code without its
first statement, or a fresh interpreter started from exercise code: each is the library's
source copied by other means, and plain to see in the submission.
"""
from __future__ import annotations

import contextlib
import sys
import types
from typing import Callable, Iterator

__all__ = ["LibraryCopyUsed", "library_copy", "is_library_copy", "library_copies_blocked",
           "refuse_if_blocked"]

# importlib.reload re-runs this file in the same module namespace: what the package already
# holds (the guard's state, the exception class, the functions) is put back at the end, so
# a reload inside exercise code cannot start a fresh, unblocked guard.
_KEPT = ("_state", "LibraryCopyUsed", "refuse_if_blocked", "library_copy", "is_library_copy",
         "library_copies_blocked", "_public_name", "_guard_bindings", "_restore")
_before_reload = {name: globals()[name] for name in _KEPT if name in globals()}
# One state for the whole process, not per thread: a thread started by exercise code must not
# find the copies unblocked. (Checks run one at a time; nothing else calls a copy meanwhile.)
_state = types.SimpleNamespace(exercise=None)


class LibraryCopyUsed(AssertionError):
    """An exercise's function called a library copy instead of implementing the method."""


def _public_name(module: str, function: str) -> str:
    """``methods.saliency`` for featviz_helpers.methods.gradients' saliency: the name the
    notebooks call it by."""
    parts = module.split(".")
    public = parts[1] if parts[0] == "featviz_helpers" and len(parts) > 1 else parts[-1]
    return f"{public}.{function}"


def refuse_if_blocked(name: str | None = None) -> None:
    """Raise :class:`LibraryCopyUsed` if exercise code is running.

    Called as the first statement of every library copy; ``name`` defaults to the calling
    function's public name (e.g. ``methods.saliency``).
    """
    exercise = getattr(_state, "exercise", None)
    if exercise is None:
        return
    if name is None:
        caller = sys._getframe(1)
        name = _public_name(caller.f_globals.get("__name__", ""), caller.f_code.co_name)
    raise LibraryCopyUsed(
        f"{exercise} called the library copy {name}. The exercise is to implement the "
        "method yourself: plumbing (hooks.capture, hooks.preserved_state, models.*, "
        "torch) is allowed, the finished method from featviz_helpers is not."
    )


def library_copy(fn: Callable) -> Callable:
    """Mark ``fn`` as a library copy of a method that an exercise asks students to write.

    ``fn``'s body must begin with ``refuse_if_blocked()`` (checked here, so no copy is
    left unguarded); the mark (``fn.library_copy_name``) is what :func:`is_library_copy` and
    the catalogue test read. ``fn`` itself is returned: there is no wrapper to step around.
    """
    body = getattr(fn, "__wrapped__", fn)          # a contextmanager's generator function
    if "refuse_if_blocked" not in body.__code__.co_names:
        raise TypeError(f"{fn.__qualname__} is marked as a library copy, but its body does not "
                        "call refuse_if_blocked(): make that its first statement.")
    fn.library_copy_name = _public_name(fn.__module__, fn.__name__)
    return fn


def is_library_copy(fn) -> bool:
    """Whether ``fn`` is marked with :func:`library_copy`."""
    return isinstance(getattr(fn, "library_copy_name", None), str)


@contextlib.contextmanager
def library_copies_blocked(exercise: str) -> Iterator[None]:
    """Inside the block, every library copy refuses to run, in every thread.

    ``exercise`` names the code running (e.g. ``"your my_saliency"``) for the message. If
    the body switched the guard off, or replaced :func:`refuse_if_blocked` where the library
    copies look it up, the guard is put back and :class:`LibraryCopyUsed` raised.
    """
    previous = getattr(_state, "exercise", None)
    bindings = _guard_bindings()
    _state.exercise = exercise
    try:
        yield
    finally:
        tampered = getattr(_state, "exercise", None) != exercise or _guard_bindings() != bindings
        _restore(bindings)
        _state.exercise = previous
    if tampered:
        raise LibraryCopyUsed(f"{exercise} switched off or replaced the library guard "
                              "(library_guard) while it ran. Implement the method yourself.")


def _guard_bindings() -> dict:
    """Every (module, name) in featviz_helpers bound to this module's guard functions or
    state, with what it is bound to."""
    found = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("featviz_helpers") or module is None:
            continue
        for attr in ("refuse_if_blocked", "library_copies_blocked", "_state"):
            if attr in vars(module):
                found[(module_name, attr)] = vars(module)[attr]
    return found


def _restore(bindings: dict) -> None:
    for (module_name, attr), value in bindings.items():
        module = sys.modules.get(module_name)
        if module is not None:
            setattr(module, attr, value)


globals().update(_before_reload)
