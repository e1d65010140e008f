"""Slider and dropdown panels for the notebooks.

A panel is controls above an output area, wired with ``ipywidgets.interactive_output``:
the callback is a plain function of the controls' values, so a notebook (and a test) can
also call it directly. Sliders update on release, not while dragging, so a slow redraw
does not queue up.
"""
from __future__ import annotations

from typing import Callable

import ipywidgets

__all__ = ["panel", "slider", "float_slider", "dropdown"]


def panel(callback: Callable[..., None], **controls: ipywidgets.ValueWidget) -> ipywidgets.VBox:
    """Controls (by keyword = the callback's argument names) above the callback's output.

    The callback runs once at once, then on every change of any control.
    """
    if not controls:
        raise ValueError("panel() needs at least one control, e.g. index=slider(0, 9, 'index').")
    out = ipywidgets.interactive_output(callback, controls)
    return ipywidgets.VBox([ipywidgets.HBox(list(controls.values())), out])


def slider(lo: int, hi: int, description: str, value: int | None = None,
           step: int = 1) -> ipywidgets.IntSlider:
    """An integer slider over [lo, hi]."""
    return ipywidgets.IntSlider(value=lo if value is None else value, min=lo, max=hi, step=step,
                                description=description, continuous_update=False,
                                style={"description_width": "initial"})


def float_slider(lo: float, hi: float, description: str, value: float | None = None,
                 step: float = 0.1) -> ipywidgets.FloatSlider:
    """A float slider over [lo, hi]."""
    return ipywidgets.FloatSlider(value=lo if value is None else value, min=lo, max=hi,
                                  step=step, description=description, continuous_update=False,
                                  style={"description_width": "initial"})


def dropdown(options, description: str, value=None) -> ipywidgets.Dropdown:
    """A dropdown; ``options`` is a list of values or of (label, value) pairs."""
    options = list(options)
    if not options:
        raise ValueError(f"dropdown {description!r} has no options.")
    first = options[0][1] if isinstance(options[0], tuple) else options[0]
    return ipywidgets.Dropdown(options=options, value=first if value is None else value,
                               description=description, style={"description_width": "initial"})
