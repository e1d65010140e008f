"""JupyterLab in headless Chromium, driven by Playwright.

The one harness behind ``tests/test_browser.py`` (does every notebook run and draw its widgets
in a real browser?) and ``benchmarks/bench_widgets.py`` (how long from moving a control to the
new image?). It

- starts JupyterLab on 127.0.0.1 on a free port with a random token, serving a temporary copy
  of the notebooks (running cells in the browser autosaves, so never the repository's files),
  with its own settings and workspace folders (so a user's JupyterLab settings play no part);
- opens a notebook, tells whether its tab shows as modified, runs all cells from the Run menu,
  waits for the kernel to go idle;
- reads what the page shows: error outputs per cell, widgets that did not render, the panels
  built by ``featviz_helpers.widgets.panel`` with their sliders, dropdowns and current image;
- moves a slider (keyboard on the handle, as a user would), picks a dropdown option, and times
  in the page, with ``performance.now()`` and a ``MutationObserver``, how long the image takes
  to change.

Chromium is Debian's ``chromium`` package (``apt-get install -y chromium``), passed to Playwright
as ``executable_path``: ``playwright install`` cannot download browsers here. ``FEATVIZ_CHROMIUM``
names another binary.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
SCREENSHOT_DIR = REPO / "out" / "browser"

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ('install Chromium and Playwright: `apt-get install -y chromium` (Debian; run as '
                'root) and `pip install -e ".[test]"` (brings the playwright package), or set '
                'FEATVIZ_CHROMIUM to a Chromium binary')

# What a page shows when the widget frontend is missing or broken: the widget's repr as text,
# or the placeholder that is never replaced.
WIDGET_AS_TEXT = re.compile(
    r"\b(?:IntSlider|FloatSlider|Dropdown|interactive|VBox|HBox|Output)"
    r"\((?:\)|children=|value=|description=|options=|layout=|outputs=)")
WIDGET_PLACEHOLDERS = ("Loading widget", "Error displaying widget", "Failed to display widget")

# Lab settings for the test server: render every cell (no windowing, so the DOM holds all
# outputs), no news or update checks (no network here).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "checkForUpdates": False, "fetchNews": "false"},
}


# ----------------------------------------------------------------------------- requirements

def find_chromium() -> str | None:
    """Path of a Chromium binary: $FEATVIZ_CHROMIUM, else the first of CHROMIUM_CANDIDATES."""
    env = os.environ.get("FEATVIZ_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def missing_requirements() -> str | None:
    """Why the browser harness cannot run here (None when it can)."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401  (importable is all we ask)
    except ImportError:
        missing.append("the playwright package is not installed")
    if find_chromium() is None:
        env = os.environ.get("FEATVIZ_CHROMIUM")
        missing.append(f"FEATVIZ_CHROMIUM={env} is not a file" if env else
                       f"no Chromium binary on PATH (looked for {', '.join(CHROMIUM_CANDIDATES)})")
    if not missing:
        return None
    return "; ".join(missing) + f" — {INSTALL_HINT}"


# ----------------------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """JupyterLab serving a copy of ``notebooks`` from ``workdir/root``; a context manager."""

    def __init__(self, workdir: Path, notebooks=NOTEBOOKS, source: Path = NOTEBOOK_DIR,
                 start_timeout: float = 90.0, serve: Path | None = None,
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None):
        """``serve``: a folder to serve as it is (``notebooks`` in it), instead of a copy of
        ``source``; ``extra_args``: more ``jupyter lab`` options; ``env``: more environment
        variables for the server and its kernels."""
        self.workdir = Path(workdir)
        self.root = Path(serve) if serve is not None else self.workdir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        # The notebooks as copied: tests compare with these, not with notebooks/ (which someone
        # may be editing while the tests run).
        self.originals: dict[str, dict] = {}
        for name in notebooks:
            text = (source / name).read_text(encoding="utf-8") if serve is None else \
                (self.root / name).read_text(encoding="utf-8")
            if serve is None:
                (self.root / name).write_text(text, encoding="utf-8")
            self.originals[name] = json.loads(text)
        self.notebooks = list(notebooks)
        self.source = source
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.start_timeout = start_timeout
        self.log_path = self.workdir / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def start(self) -> "LabServer":
        settings = self.workdir / "settings"
        for rel, value in LAB_SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        env = dict(os.environ)
        # The kernel must be this interpreter's (the featviz environment), whatever is on PATH.
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["JUPYTER_CONFIG_DIR"] = str(self.workdir / "config")   # no user jupyter config
        env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"   # figures inline
        env.update(self.env)
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
               "--ServerApp.port_retries=0", "--ServerApp.allow_root=True",
               f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}",
               f"--LabApp.user_settings_dir={settings}",
               f"--LabApp.workspaces_dir={self.workdir / 'workspaces'}",
               "--LabApp.news_url=", "--ServerApp.open_browser=False", *self.extra_args]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode} while starting;"
                                   f" log {self.log_path}:\n{self.log_tail()}")
            try:
                self.api("GET", "api/status")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"JupyterLab did not answer on {self.base} within "
                                   f"{self.start_timeout:.0f} s; log {self.log_path}:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.3)

    def api(self, method: str, path: str, timeout: float = 10.0):
        req = urllib.request.Request(f"{self.base}/{path.lstrip('/')}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel (frees CPU and memory between notebooks)."""
        for session in self.api("GET", "api/sessions") or []:
            with contextlib.suppress(urllib.error.URLError, OSError):
                self.api("DELETE", f"api/sessions/{session['id']}", timeout=30)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(urllib.error.URLError, OSError):
                self.api("POST", "api/shutdown", timeout=10)   # also stops its kernels
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._log.close()
        self.proc = None

    def __enter__(self) -> "LabServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def chromium(headless: bool = True):
    """A Playwright Chromium browser (Debian's chromium via executable_path)."""
    from playwright.sync_api import sync_playwright
    path = find_chromium()
    if path is None:
        raise RuntimeError(missing_requirements())
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=headless,
                                     args=["--no-sandbox", "--disable-dev-shm-usage",
                                           "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


# ----------------------------------------------------------------------------- a notebook page

@dataclass
class Control:
    """One slider or dropdown of a panel."""
    kind: str            # "slider" or "dropdown"
    description: str
    locator: object      # playwright Locator of the widget's root element


@dataclass
class Panel:
    """A featviz_helpers.widgets.panel: controls above image widgets (and an error line)."""
    index: int
    cell: int            # index of the notebook cell that displays it
    locator: object
    controls: list[Control] = field(default_factory=list)


# JavaScript run in the page -------------------------------------------------------------------

_JS_CELLS = """
() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')]
  .map((cell, i) => ({
    index: i,
    code: cell.classList.contains('jp-CodeCell'),
    prompt: (cell.querySelector('.jp-InputArea-prompt') || {}).textContent || '',
    text: [...cell.querySelectorAll('.jp-Cell-outputArea .jp-OutputArea-output')]
      .map(o => o.innerText).join('\\n'),
    head: ((cell.querySelector('.jp-InputArea-editor') || {}).textContent || '').slice(0, 80),
  }))
"""

_JS_KERNEL_READY = """
() => { const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return false;
  const e = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const k = panel.querySelector('.jp-Toolbar-kernelName');
  const name = k ? k.textContent.trim() : '';
  return !!e && e.getAttribute('data-status') === 'idle' && name !== '' && name !== 'No Kernel'; }
"""

# Arm a timer for the next change of the panel's image. t0: the input event on the control
# (keydown for a slider handle, change for a select), taken from the event's timeStamp, which
# is on performance.now()'s clock; t1: the MutationObserver callback that first sees an <img>
# with a different src in the panel's tiles; note: the panel's note then (the panel writes the
# Python side's time there, before the pictures).
_JS_ARM = """
([panel, control, eventName]) => {
  const out = panel.querySelector('.featviz-tiles');
  const srcs = () => [...out.querySelectorAll('img')].map(i => i.src).join('|');
  const state = {t0: null, t1: null, old: srcs(), now: null, note: null};
  window.__fvTiming = state;
  control.addEventListener(eventName, e => { if (state.t0 === null) state.t0 = e.timeStamp; },
                           {capture: true, once: true});
  const obs = new MutationObserver(() => {
    const s = srcs();
    if (s && s !== state.old && state.t1 === null) {
      state.t1 = performance.now();
      state.now = s;
      const note = panel.querySelector('.featviz-note');
      state.note = note ? note.innerText : '';
      obs.disconnect();
    }
  });
  obs.observe(out, {childList: true, subtree: true, attributes: true,
                    attributeFilter: ['src']});
  state.disconnect = () => obs.disconnect();
  return state.old;
}
"""


class NotebookPage:
    """One notebook opened in JupyterLab in its own browser page."""

    def __init__(self, context, server: LabServer, name: str):
        """``context``: a Playwright BrowserContext (see ``new_context``)."""
        self.server = server
        self.name = name
        self.page = context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}")
                     if m.type == "error" else None)

    # -- opening, state ----------------------------------------------------------------------
    def open(self, timeout: float = 120.0) -> None:
        """Open the notebook (a fresh workspace); return once its kernel is idle."""
        self.page.goto(self.server.url(f"lab/tree/{self.name}?reset"), wait_until="load",
                       timeout=timeout * 1000)
        self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(
            timeout=timeout * 1000)
        self.wait_kernel_idle(timeout)
        # The kernel's info reply (language_info) lands right around "idle"; let it settle.
        self.page.wait_for_timeout(1500)

    def kernel_status(self) -> str:
        """The notebook toolbar's kernel status: idle, busy, starting, connecting, …"""
        return self.page.evaluate(
            """() => { const e = document.querySelector(
                 '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
               return e ? (e.getAttribute('data-status') || '') : ''; }""")

    def wait_kernel_idle(self, timeout: float = 120.0) -> None:
        """Until a kernel is attached (the toolbar names it) and its status is idle.

        A notebook without a usable kernelspec makes JupyterLab ask which kernel to start: the
        dialog's default (this environment's Python) is accepted.
        """
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(_JS_KERNEL_READY):
            dialog = self.page.locator(".jp-Dialog .jp-mod-accept")
            if dialog.count():
                dialog.first.click()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no idle kernel after {timeout:.0f} s "
                                   f"(status {self.kernel_status()!r})")
            self.page.wait_for_timeout(100)

    def tab(self):
        """The notebook's tab in the main dock area."""
        return self.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab",
                                 has_text=self.name).first

    def is_dirty(self) -> bool:
        """JupyterLab marks the tab (●) and the panel with jp-mod-dirty when the model changed."""
        return self.page.evaluate(
            """(name) => [...document.querySelectorAll('.lm-DockPanel-tabBar .lm-TabBar-tab')]
                 .some(t => t.textContent.includes(name) && t.classList.contains('jp-mod-dirty'))""",
            self.name)

    def save(self, timeout: float = 30.0) -> dict:
        """Save from the browser (Ctrl+S); return the saved notebook's JSON."""
        self.tab().click()
        self.page.keyboard.press("Control+s")
        self.page.wait_for_function(
            """(name) => ![...document.querySelectorAll('.lm-DockPanel-tabBar .lm-TabBar-tab')]
                 .some(t => t.textContent.includes(name) && t.classList.contains('jp-mod-dirty'))""",
            arg=self.name, timeout=timeout * 1000)
        return json.loads((self.server.root / self.name).read_text(encoding="utf-8"))

    # -- running -----------------------------------------------------------------------------
    def run_all(self, timeout: float = 300.0) -> float:
        """Run → Run All Cells from the menu bar; wait until every cell finished. Seconds taken."""
        t = time.monotonic()
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        self.wait_all_done(timeout)
        return time.monotonic() - t

    def wait_all_done(self, timeout: float = 300.0) -> None:
        """Until no cell is queued or running ([*]) and the kernel is idle, twice in a row."""
        deadline = time.monotonic() + timeout
        # Give the first execute request time to leave the browser.
        self.page.wait_for_timeout(500)
        calm = 0
        while calm < 2:
            if time.monotonic() > deadline:
                running = self.running_cells()
                where = (f"cell {running[0]['index']} ({running[0]['head'][:60]!r}…) still "
                         f"running" if running else f"kernel {self.kernel_status()!r}")
                raise TimeoutError(f"{self.name}: Run All Cells not finished after "
                                   f"{timeout:.0f} s: {where}")
            busy = self.page.evaluate(
                """() => [...document.querySelectorAll(
                     '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputArea-prompt')]
                     .some(p => p.textContent.includes('*'))""")
            calm = 0 if busy or self.kernel_status() != "idle" else calm + 1
            self.page.wait_for_timeout(300)

    def running_cells(self) -> list[dict]:
        """Cells queued or running ([*]), first the one that runs."""
        return [c for c in self.cells() if "*" in c["prompt"]]

    # -- reading the page --------------------------------------------------------------------
    def cells(self) -> list[dict]:
        return self.page.evaluate(_JS_CELLS)

    def error_outputs(self) -> list[tuple[int, str]]:
        """(cell index, error) for every error output, read from the notebook as the browser
        saves it (Ctrl+S): exact, where the page shows errors and stderr alike."""
        return notebook_errors(self.save())

    def unexecuted_code_cells(self) -> list[int]:
        return [c["index"] for c in self.cells()
                if c["code"] and c["head"].strip() and not re.search(r"\[\d+\]", c["prompt"])]

    def widget_problems(self) -> list[tuple[int, str]]:
        """(cell index, what) for widgets shown as text or never rendered."""
        problems = []
        for c in self.cells():
            for line in c["text"].splitlines():
                if any(p in line for p in WIDGET_PLACEHOLDERS) or WIDGET_AS_TEXT.search(line):
                    problems.append((c["index"], line.strip()[:200]))
        return problems

    def panels(self) -> list[Panel]:
        """The widget panels: a VBox (class featviz-panel) holding an HBox of controls, the
        tiles (class featviz-tiles) and an error line (class featviz-error)."""
        loc = self.page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output "
            ".featviz-panel:has(> .widget-hbox):has(> .featviz-tiles)")
        panels = []
        for i in range(loc.count()):
            p = loc.nth(i)
            cell = p.evaluate(
                """(el) => [...document.querySelectorAll(
                     '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')]
                     .indexOf(el.closest('.jp-Cell'))""")
            panel = Panel(index=i, cell=cell, locator=p)
            ctl = p.locator(":scope > .widget-hbox > .widget-slider, "
                            ":scope > .widget-hbox > .widget-dropdown")
            for j in range(ctl.count()):
                c = ctl.nth(j)
                kind = "dropdown" if "widget-dropdown" in (c.get_attribute("class") or "") \
                    else "slider"
                desc = c.locator(".widget-label").first.inner_text().strip()
                panel.controls.append(Control(kind, desc, c))
            panels.append(panel)
        return panels

    @staticmethod
    def image(panel: Panel) -> str:
        """What the panel's images show: a SHA-1 of each image's bytes, '|'-joined ('' if the
        panel has no image). Each update of an image widget gets a new blob: URL even for the
        same picture, so the bytes, not the URLs, tell whether the picture changed."""
        return panel.locator.evaluate(
            """async (p) => {
                 const out = [];
                 for (const img of p.querySelector('.featviz-tiles').querySelectorAll('img')) {
                   if (!img.src) { out.push('-'); continue; }
                   const bytes = await (await fetch(img.src)).arrayBuffer();
                   const h = new Uint8Array(await crypto.subtle.digest('SHA-1', bytes));
                   out.push(bytes.byteLength ? [...h].map(x => x.toString(16).padStart(2, '0')).join('') : '-');
                 }
                 return out.some(x => x !== '-') ? out.join('|') : '';
               }""")

    @staticmethod
    def output_text(panel: Panel) -> str:
        return panel.locator.locator(".featviz-tiles").inner_text()

    # -- acting on controls ------------------------------------------------------------------
    @staticmethod
    def slider_state(control: Control) -> tuple[float, float, float, float]:
        """(value, min, max, step) of a slider, from its noUiSlider instance (exact; the
        handle's ARIA attributes round to one decimal)."""
        return tuple(control.locator.evaluate(
            """(el) => { const s = el.querySelector('.noUi-target').noUiSlider;
                 return [Number(s.get()), Number(s.options.range.min),
                         Number(s.options.range.max), Number(s.options.step || 1)]; }"""))

    def move_slider(self, control: Control, direction: int = 1) -> int:
        """One step with the keyboard on the handle, as a user would (arrow key).

        ``direction`` +1 is right, -1 left; at the end of the range it turns round. Returns the
        direction taken, so a caller can sweep back and forth.
        """
        value, lo, hi, step = self.slider_state(control)
        if direction > 0 and value > hi - step / 2:
            direction = -1
        elif direction < 0 and value < lo + step / 2:
            direction = 1
        handle = control.locator.locator(".noUi-handle").first
        handle.focus()
        self.page.keyboard.press("ArrowRight" if direction > 0 else "ArrowLeft")
        return direction

    def next_option(self, control: Control, direction: int = 1) -> int:
        """Select the next (``direction`` +1) or previous (-1) option, wrapping round."""
        select = control.locator.locator("select").first
        n = select.locator("option").count()
        cur = select.evaluate("(s) => s.selectedIndex")
        select.select_option(index=(cur + direction) % n)
        return direction

    def act(self, control: Control, direction: int = 1) -> int:
        """Move a slider one step or pick a dropdown's next/previous option; returns the
        direction taken (a slider turns round at the end of its range)."""
        if control.kind == "slider":
            return self.move_slider(control, direction)
        return self.next_option(control, direction)

    def control_value(self, control: Control) -> str:
        if control.kind == "slider":
            return control.locator.locator(".widget-readout").first.inner_text().strip()
        return control.locator.locator("select").first.evaluate(
            "(s) => s.options[s.selectedIndex].text")

    def last_note(self) -> str:
        """The panel's note (its Python side's time) when ``timed_change`` saw a new image."""
        return self.page.evaluate("() => window.__fvTiming.note") or ""

    def timed_change(self, panel: Panel, control: Control, direction: int = 1,
                     timeout: float = 60.0, action=None) -> tuple[float, str, int]:
        """Move ``control`` once (or call ``action()``, which acts on it and returns a
        direction); return (ms from the input event to the new image in the page, the new
        image, the direction taken).

        Raises TimeoutError if the image does not change within ``timeout`` seconds.
        """
        target = control.locator.locator(
            ".noUi-handle" if control.kind == "slider" else "select").first
        event = "keydown" if control.kind == "slider" else "change"
        self.page.evaluate(_JS_ARM, [panel.locator.element_handle(),
                                     target.element_handle(), event])
        direction = action() if action else self.act(control, direction)
        try:
            self.page.wait_for_function("() => window.__fvTiming.t1 !== null",
                                        timeout=timeout * 1000, polling=20)
        except Exception as e:          # playwright's TimeoutError
            self.page.evaluate("() => window.__fvTiming.disconnect()")
            raise TimeoutError(
                f"{self.name}: the image of panel {panel.index} (cell {panel.cell}) did not "
                f"change within {timeout:.0f} s after moving {control.description!r} to "
                f"{self.control_value(control)!r}") from e
        t0, t1, new = self.page.evaluate(
            "() => [window.__fvTiming.t0, window.__fvTiming.t1, window.__fvTiming.now]")
        if t0 is None:
            raise RuntimeError(f"{self.name}: no {event} event seen on {control.description!r}")
        return t1 - t0, new, direction

    def control_state(self, control: Control) -> float:
        """The slider's value, or the dropdown's selected index (for ``restore``)."""
        if control.kind == "slider":
            return self.slider_state(control)[0]
        return control.locator.locator("select").first.evaluate("(s) => s.selectedIndex")

    def restore(self, panel: Panel, control: Control, state: float,
                timeout: float = 60.0) -> None:
        """Bring ``control`` back to ``state`` (from ``control_state``), step by step for a
        slider, waiting for the image after each step."""
        if control.kind == "dropdown":
            if self.control_state(control) != state:
                def select() -> int:
                    control.locator.locator("select").first.select_option(index=int(state))
                    return 1
                self.timed_change(panel, control, timeout=timeout, action=select)
            return
        while True:
            value, _, _, step = self.slider_state(control)
            if abs(value - state) < step / 2:
                return
            self.timed_change(panel, control, 1 if state > value else -1, timeout)

    @staticmethod
    def output_errors(panel: Panel) -> list[str]:
        """Tracebacks shown in the panel's output (the callback raised)."""
        return panel.locator.evaluate(
            """(p) => [...p.querySelectorAll('.featviz-error')]
                 .map(o => o.innerText)
                 .filter(t => t.includes('Traceback (most recent call last)'))""")

    # -- evidence ----------------------------------------------------------------------------
    def screenshot(self, tag: str, folder: Path = SCREENSHOT_DIR, cell: int | None = None) -> str:
        """A full-page screenshot in ``folder`` (scrolled to ``cell`` if given): its path, or
        why there is none."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{Path(self.name).stem}-{tag}.png"
        with contextlib.suppress(Exception):
            if cell is not None:
                self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell") \
                    .nth(cell).scroll_into_view_if_needed(timeout=5000)
        try:
            self.page.screenshot(path=str(path), full_page=True, timeout=30000)
        except Exception as e:          # a crashed page must not hide the failure itself
            return f"(no screenshot: {type(e).__name__}: {str(e).splitlines()[0]})"
        return str(path)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.page.close()


def new_context(browser, viewport=(1400, 1000)):
    """A browser context for notebook pages (they share its HTTP cache of Lab's bundles)."""
    return browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def notebook_errors(nb: dict) -> list[tuple[int, str]]:
    """(cell index, 'Name: value' and the traceback's last lines) for each error output."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                tb = _ANSI.sub("", "\n".join(out.get("traceback", [])))
                tail = "\n".join(tb.strip().splitlines()[-8:])
                found.append((i, f"{out.get('ename')}: {out.get('evalue')}\n{tail}"))
    return found


def panel_cells(nb: dict) -> list[int]:
    """Indices of the code cells of notebook JSON ``nb`` that build a widgets.panel."""
    return [i for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "code" and "widgets.panel(" in "".join(c["source"])]


def json_diff(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ, as 'path: a -> b' lines (outputs of cells left out)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            p = f"{path}/{k}"
            if k not in a:
                out.append(f"{p}: (absent) -> {json.dumps(b[k])}")
            elif k not in b:
                out.append(f"{p}: {json.dumps(a[k])} -> (absent)")
            else:
                out.extend(json_diff(a[k], b[k], p))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_diff(x, y, f"{path}/{i}")]
    return [] if a == b else [f"{path}: {json.dumps(a)[:200]} -> {json.dumps(b)[:200]}"]
