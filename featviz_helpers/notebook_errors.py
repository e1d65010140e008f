"""A one-line hint under the errors a student meets when running a notebook's cells out of
order: a ``NameError`` for a name an earlier cell defines.

:func:`install` (called when ``featviz_helpers`` is imported in a Jupyter kernel) adds, under
the usual traceback, one line saying to run the cells above in order or to check the spelling.
The error stays a ``NameError`` with its traceback; nothing else changes.
"""
from __future__ import annotations

import sys

HINT = ("Hint: if `{name}` is defined in an earlier cell, run the cells above first, in order "
        "(Run → Run All Above Selected Cell); otherwise check its spelling.")


def _hint_under_name_error(shell, etype, value, tb, tb_offset=None):
    # IPython's run_code calls a custom handler and shows nothing itself: show the error here,
    # as showtraceback would (in a kernel, the error output and the reply's traceback).
    stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    shell._showtraceback(etype, value, [*stb, HINT.format(name=getattr(value, "name", None)
                                                          or "the name")])


def install() -> bool:
    """Add the hint in the running IPython kernel; False (and nothing done) outside one."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    if shell.custom_exceptions == (NameError,):         # already installed
        return True
    if shell.custom_exceptions:                          # someone else's handler: leave it be
        return False
    shell.set_custom_exc((NameError,), _hint_under_name_error)
    return True
