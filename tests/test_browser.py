"""Every notebook in a real browser: JupyterLab in headless Chromium, driven by Playwright.

One JupyterLab server (module scope) serves a temporary copy of notebooks/; each notebook is
opened in its own page, run with Run → Run All Cells, and checked:

- opening it does not mark it modified (the ● on its tab) before any edit;
- no cell has an error output, and every code cell ran;
- widgets render as widgets: no "Loading widget…" left, no widget repr such as
  ``VBox(children=…`` shown as text (what a missing widget frontend looks like), and every
  ``widgets.panel(…)`` cell of the notebook shows a panel;
- in every panel, moving each slider (arrow key on the handle) and picking another option in
  each dropdown changes the displayed image, and the callback does not raise.

On a failure the assertion message names a full-page screenshot in out/browser/.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the playwright package (test
extras). Without them these tests skip, unless FEATVIZ_REQUIRE_BROWSER=1 (CI) makes them fail.
Times are not asserted here: benchmarks/bench_widgets.py measures the widgets' latency.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import pytest

import lab_harness as H

pytestmark = pytest.mark.browser

# Seconds for Run All Cells of one notebook: most take 5–30 s, 03 about two minutes on a busy
# 2-core machine.
RUN_TIMEOUT = float(os.environ.get("FEATVIZ_BROWSER_RUN_TIMEOUT", 600))
CHANGE_TIMEOUT = 60.0    # seconds for a panel's image to change after a move


def _require_browser() -> None:
    reason = H.missing_requirements()
    if reason is None:
        return
    if os.environ.get("FEATVIZ_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FEATVIZ_REQUIRE_BROWSER=1, but the browser tests cannot run: {reason}",
                    pytrace=False)
    pytest.skip(f"browser tests skipped: {reason} (FEATVIZ_REQUIRE_BROWSER=1 makes this a "
                f"failure)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(JupyterLab server on a temporary copy of notebooks/, a Chromium browser context)."""
    _require_browser()
    for old in H.SCREENSHOT_DIR.glob("*.png"):
        old.unlink()
    with H.LabServer(tmp_path_factory.mktemp("lab")) as server, H.chromium() as browser:
        context = H.new_context(browser)
        try:
            yield server, context
        finally:
            context.close()


@dataclass
class Run:
    """One notebook, opened and run once; the tests read from it."""
    name: str
    page: H.NotebookPage
    original: dict                                          # the notebook JSON as served
    dirty_on_open: bool | None = None
    open_diff: list[str] = field(default_factory=list)     # what saving the untouched copy changed
    open_screenshot: str = ""
    setup_error: str = ""
    seconds: dict = field(default_factory=dict)             # open, run: wall-clock seconds
    setup_screenshot: str = ""

    def fail(self, message: str, tag: str, cell: int | None = None):
        shot = self.page.screenshot(tag, cell=cell)
        pytest.fail(f"{self.name}: {message}\nscreenshot: {shot}", pytrace=False)

    def require_ran(self):
        if self.setup_error:
            pytest.fail(f"{self.name}: could not open and run it: {self.setup_error}\n"
                        f"screenshot: {self.setup_screenshot}\nJupyterLab log tail:\n"
                        f"{self.page.server.log_tail(1500)}", pytrace=False)


@pytest.fixture(scope="module", params=H.NOTEBOOKS)
def notebook(request, lab):
    """Open the notebook, note whether it shows as modified, then Run All Cells."""
    server, context = lab
    name = request.param
    run = Run(name, H.NotebookPage(context, server, name), server.originals[name])
    t = time.monotonic()
    try:
        run.page.open()
        run.seconds["open"] = time.monotonic() - t
        run.dirty_on_open = run.page.is_dirty()
        if run.dirty_on_open:
            # Why: save the untouched copy from the browser and compare with the original.
            run.open_screenshot = run.page.screenshot("modified-on-open")
            run.open_diff = H.json_diff(run.original, run.page.save())
        run.seconds["run all"] = run.page.run_all(timeout=RUN_TIMEOUT)
    except Exception as e:                     # reported by each test that needs the run
        run.setup_error = f"{type(e).__name__}: {e}"
        running = run.page.running_cells() if isinstance(e, TimeoutError) else []
        run.setup_screenshot = run.page.screenshot(
            "setup-failed", cell=running[0]["index"] if running else None)
    print(f"[browser] {name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items()))
    yield run
    run.page.close()
    server.shutdown_kernels()


def test_opening_does_not_mark_it_modified(notebook):
    """JupyterLab writes the kernel's kernelspec and language_info into the notebook when its
    kernel starts; when they differ from the stored metadata, the notebook shows as modified
    (●) before any edit. (The cause of the issue "every notebook shows as modified right after
    opening": the notebooks stored display_name 'Python 3' and language_info {name: python}
    only; they now store what ipykernel reports, and tests/test_repo.py keeps it so.)"""
    if notebook.dirty_on_open is None:
        notebook.require_ran()
    if not notebook.dirty_on_open:
        return
    diff = notebook.open_diff
    version_only = bool(diff) and all(d.startswith("/metadata/language_info/version:")
                                      for d in diff)
    if version_only:
        pytest.xfail(f"{notebook.name}: only language_info.version differs ({diff[0]}): the "
                     f"notebook records another Python than this kernel's (CI's), and "
                     f"JupyterLab always rewrites it")
    pytest.fail(f"{notebook.name} shows as modified (●) right after opening, before any edit.\n"
                f"Saving the untouched copy from the browser changes:\n  "
                + "\n  ".join(diff or ["(nothing in the JSON)"])
                + f"\nscreenshot: {notebook.open_screenshot}", pytrace=False)


def test_runs_without_errors(notebook):
    notebook.require_ran()
    page = notebook.page
    heads = {c["index"]: c["head"] for c in page.cells()}
    errors = page.error_outputs()
    if errors:
        lines = [f"cell {i} ({heads.get(i, '')[:50]!r}…):\n    " + text.replace("\n", "\n    ")
                 for i, text in errors]
        notebook.fail(f"{len(errors)} error output(s):\n" + "\n".join(lines),
                      "errors", cell=errors[0][0])
    not_run = page.unexecuted_code_cells()
    if not_run:
        notebook.fail(f"code cells {not_run} did not run (no execution count)",
                      "not-run", cell=not_run[0])


def test_widgets_render(notebook):
    notebook.require_ran()
    page = notebook.page
    problems = page.widget_problems()
    if problems:
        notebook.fail("widgets did not render as widgets (is the ipywidgets frontend, "
                      "jupyterlab_widgets, installed?):\n"
                      + "\n".join(f"  cell {i}: {text}" for i, text in problems),
                      "widgets-as-text", cell=problems[0][0])
    expected = H.panel_cells(notebook.original)
    shown = [p.cell for p in page.panels()]
    if shown != expected:
        notebook.fail(f"cells {expected} build widget panels, the page shows panels in cells "
                      f"{shown}", "panels-missing",
                      cell=(sorted(set(expected) - set(shown)) or [None])[0])
    for panel in page.panels():
        if not panel.controls:
            notebook.fail(f"the panel in cell {panel.cell} shows no slider or dropdown",
                          "no-controls", cell=panel.cell)
        if not page.image(panel):
            notebook.fail(f"the panel in cell {panel.cell} shows no image",
                          "no-image", cell=panel.cell)


def test_panel_controls_change_the_image(notebook):
    if not H.panel_cells(notebook.original):
        pytest.skip(f"{notebook.name} has no widget panels")
    notebook.require_ran()
    page = notebook.page
    panels = page.panels()
    if not panels:
        notebook.fail("no widget panel is shown", "panels-missing")
    for panel in panels:
        for control in panel.controls:
            # Each control from the panel's first state: move it, then move it back (so a
            # control is not judged on a combination another control's move set up).
            direction = 1
            for step in ("move", "move back"):
                before = page.image(panel)
                try:
                    _, _, direction = page.timed_change(panel, control, direction,
                                                        timeout=CHANGE_TIMEOUT)
                except (TimeoutError, RuntimeError) as e:
                    errors = page.output_errors(panel)
                    notebook.fail(f"{step}: {e}"
                                  + (f"\nthe callback raised:\n{errors[0]}" if errors else ""),
                                  f"no-change-{control.kind}", cell=panel.cell)
                # The first new image has arrived; the panel's others follow within moments.
                deadline = time.monotonic() + 5
                while (after := page.image(panel)) == before and time.monotonic() < deadline:
                    time.sleep(0.05)
                errors = page.output_errors(panel)
                if errors:
                    notebook.fail(f"after moving {control.description!r} to "
                                  f"{page.control_value(control)!r} the panel in cell "
                                  f"{panel.cell} shows an error:\n{errors[0]}",
                                  "callback-error", cell=panel.cell)
                assert after and after != before, (
                    f"{notebook.name}: moving {control.description!r} did not change what the images show")
                direction = -direction
