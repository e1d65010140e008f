"""Slider and dropdown panels for the notebooks.

A panel is controls above rows of titled pictures. Its callback is a plain function of the
controls' values that returns :class:`Tiles` (pictures as numpy arrays, composed by the
``viz`` convention), so a notebook (and a test) can also call it directly: the returned
``Tiles`` show themselves in a notebook, without any widget.

On every change the panel calls the callback, encodes each picture as a PNG and swaps it into
an existing ``ipywidgets.Image``; nothing else is redrawn. No matplotlib figure is made per
move, and no output is captured into an ``Output`` widget: headless runners (nbconvert,
nbgrader autograde, through nbclient) mimic an Output widget by sending a message to the
kernel while they wait for the cell's reply, and now and then that wait then misses the reply
and sits out the whole cell timeout. Sliders update on release, not while dragging.
"""
from __future__ import annotations

import base64
import html
import io
import os
import time
import traceback
from typing import Callable, NamedTuple, Sequence

import ipywidgets
import numpy as np
from PIL import Image

from .viz import enlarge

__all__ = ["Tile", "Tiles", "panel", "slider", "float_slider", "dropdown", "png"]

TIMING_VARIABLE = "FEATVIZ_PANEL_TIMING"     # "1": each panel shows its last drawing's time


class Tile(NamedTuple):
    """One picture of a panel: (H,W,3) RGB or (H,W) grey, floats in [0,1] or uint8; a title
    above it; its width on screen in CSS pixels. ``picture=None`` leaves the place empty."""
    picture: np.ndarray | None
    title: str = ""
    width: int = 220


class Tiles:
    """Rows of :class:`Tile`: what a panel's callback returns. Shown in a notebook as HTML."""

    def __init__(self, *rows: Sequence[Tile]):
        if not rows or not all(rows):
            raise ValueError("Tiles needs at least one row, and each row at least one Tile: "
                             "Tiles([Tile(picture, 'title'), ...], ...).")
        for row in rows:
            for tile in row:
                if not isinstance(tile, Tile):
                    raise TypeError(f"a row of Tiles holds Tile(picture, title); got "
                                    f"{type(tile).__name__}.")
        self.rows = [list(row) for row in rows]

    @property
    def shape(self) -> tuple[int, ...]:
        """The number of tiles in each row."""
        return tuple(len(row) for row in self.rows)

    def _repr_html_(self) -> str:
        cells = []
        for row in self.rows:
            figures = []
            for t in row:
                img = "" if t.picture is None else (
                    f'<img src="data:image/png;base64,{base64.b64encode(png(t.picture, t.width)).decode()}"'
                    f' style="width:{t.width}px">')
                figures.append(f'<figure style="margin:2px 4px;width:{t.width}px">'
                               f'{_caption(t.title)}{img}</figure>')
            cells.append(f'<div style="display:flex">{"".join(figures)}</div>')
        return "".join(cells)


def png(picture: np.ndarray, width: int | None = None) -> bytes:
    """A picture (H,W,3) or (H,W) in [0,1] (or uint8) as PNG bytes; enlarged by whole pixels
    to at least ``width`` so that a small map stays crisp when the browser scales it."""
    a = np.asarray(picture)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        hint = (" (channels first? use picture.permute(1, 2, 0))"
                if a.ndim == 3 and a.shape[0] in (3, 4) else "")
        raise ValueError(f"a picture is (H,W,3) RGB or (H,W) grey; got shape {a.shape}{hint}.")
    if a.dtype != np.uint8:
        if not np.isfinite(a).all():
            raise ValueError("the picture holds NaN or inf; a map must be finite to be drawn.")
        a = (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    if width:
        a = enlarge(a, width)
    buffer = io.BytesIO()
    Image.fromarray(a).save(buffer, format="PNG", compress_level=1)   # speed over size
    return buffer.getvalue()


# An empty place: one transparent pixel, stretched to the tile's width, keeps the place's room
# (an image widget with no bytes would show a broken-image icon).
EMPTY = png(np.zeros((1, 1, 4), dtype=np.uint8))


def _caption(title: str) -> str:
    return f'<div style="text-align:center;font-size:12px">{html.escape(title)}</div>'


def _tile_widget() -> ipywidgets.VBox:
    title = ipywidgets.HTML()
    image = ipywidgets.Image(format="png")
    return ipywidgets.VBox([title, image], layout=ipywidgets.Layout(margin="0 4px 0 0"))


def _update_tile(box: ipywidgets.VBox, tile: Tile, picture: bytes) -> None:
    title, image = box.children
    caption = _caption(tile.title)
    if title.value != caption:
        title.value = caption
    width = f"{tile.width}px"
    if image.layout.width != width:
        image.layout.width = title.layout.width = width
    image.value = picture


def panel(callback: Callable[..., Tiles], **controls: ipywidgets.ValueWidget) -> ipywidgets.VBox:
    """Controls (by keyword = the callback's argument names) above the pictures the callback
    returns as :class:`Tiles`.

    The callback runs once at once (an error then is raised in the cell), then on every
    change of any control (an error then is shown in the panel, the pictures left as they
    were). ``panel.timings`` collects (callback ms, PNG ms) per drawing. With the environment
    variable ``FEATVIZ_PANEL_TIMING=1`` in the kernel (what ``benchmarks/bench_widgets.py``
    sets), a grey note under the pictures also says the last, with the drawing's number; a
    student sees no such line.
    """
    if not controls:
        raise ValueError("panel() needs at least one control, e.g. index=slider(0, 9, 'index').")
    area = ipywidgets.VBox()
    area.add_class("featviz-tiles")
    error = ipywidgets.HTML()
    error.add_class("featviz-error")
    note = ipywidgets.HTML()
    note.add_class("featviz-note")
    box = ipywidgets.VBox([ipywidgets.HBox(list(controls.values())), area, error, note])
    box.add_class("featviz-panel")
    box.timings = []

    def draw() -> None:
        t0 = time.perf_counter()
        tiles = callback(**{name: c.value for name, c in controls.items()})
        if not isinstance(tiles, Tiles):
            raise TypeError(f"the panel's callback {getattr(callback, '__name__', callback)!r} "
                            f"must return Tiles(...) of pictures; it returned "
                            f"{type(tiles).__name__}.")
        t1 = time.perf_counter()
        pictures = [[EMPTY if t.picture is None else png(t.picture, t.width) for t in row]
                    for row in tiles.rows]
        t2 = time.perf_counter()
        ms = (1000 * (t1 - t0), 1000 * (t2 - t1))
        box.timings.append(ms)
        # The note goes out before the pictures: a page that sees a new picture sees its note.
        if os.environ.get(TIMING_VARIABLE) == "1":
            note.value = (f'<span style="color:#888;font-size:11px">drawing {len(box.timings)}: '
                          f'Python {ms[0]:.0f} ms callback + {ms[1]:.0f} ms PNG</span>')
        if tuple(len(r.children) for r in area.children) != tiles.shape:
            area.children = [ipywidgets.HBox([_tile_widget() for _ in row]) for row in tiles.rows]
        for widgets_row, row, row_pictures in zip(area.children, tiles.rows, pictures):
            for w, tile, picture in zip(widgets_row.children, row, row_pictures):
                _update_tile(w, tile, picture)

    def on_change(_change) -> None:
        try:
            draw()
        except Exception:            # shown where the student looks, not in a log
            error.value = f'<pre style="color:#b00">{html.escape(traceback.format_exc())}</pre>'
        else:
            if error.value:
                error.value = ""

    draw()
    for control in controls.values():
        control.observe(on_change, names="value")
    return box


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
