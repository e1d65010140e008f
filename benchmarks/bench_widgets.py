"""Widget latency in a real browser: from moving a control to the new image on screen.

On the harness of tests/test_browser.py (tests/lab_harness.py): JupyterLab on 127.0.0.1
serving a temporary copy of notebooks/, headless Chromium through Playwright. Each notebook is
opened and run (Run → Run All Cells); then every slider and dropdown of every widget panel is
moved ``--moves`` times (sliders sweep one step at a time, turning round at the end of their
range; dropdowns step through their options), the other controls left as the notebook sets
them (each control is put back before the next is timed). Latency is measured in the page: from the input event's timestamp (keydown on the
slider handle, change on the select) to the MutationObserver callback that first sees the
panel's <img> with a new src, both on performance.now()'s clock. It therefore covers the
widget message to the kernel, the callback, the PNG encoding, the PNGs back to the browser and
their insertion into the page, and not the decoding/painting of the image. Beside it, the
Python side's share: the callback and the PNG encoding as the panel timed them (the panel's
note under its pictures carries them).

    .venv/bin/python benchmarks/bench_widgets.py                  # all six notebooks
    .venv/bin/python benchmarks/bench_widgets.py 02_saliency.ipynb --moves 10

Needs Debian's chromium (`apt-get install -y chromium`) and the playwright package (test
extras). First moves to an option the notebook never drew include the method's computation
(the notebooks cache per option), which is what a student sees. A script, not a test: it
prints a table and asserts nothing about times.
"""
from __future__ import annotations

import argparse
import re
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import lab_harness as H  # noqa: E402
from featviz_helpers.widgets import TIMING_VARIABLE  # noqa: E402


def chromium_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or path
    except (OSError, subprocess.SubprocessError):
        return path


def python_ms(note: str) -> float | None:
    """Callback + PNG milliseconds from a panel's note ('drawing n: Python a ms callback + b ms
    PNG'), None if the note says otherwise."""
    m = re.search(r"Python (\d+) ms callback \+ (\d+) ms PNG", note)
    return float(m[1]) + float(m[2]) if m else None


def bench_notebook(context, server, name: str, moves: int, timeout: float) -> tuple[list, dict]:
    """Rows (notebook, panel cell, widget, kind, latencies ms or None, note) for one notebook."""
    page = H.NotebookPage(context, server, name)
    rows, info = [], {}
    try:
        t = time.monotonic()
        page.open()
        info["open"] = time.monotonic() - t
        info["run all"] = page.run_all(timeout=600)
        errors = H.notebook_errors(page.save())
        if errors:
            info["errors"] = errors
        for panel in page.panels():
            for control in panel.controls:
                times, python, note, direction = [], [], "", 1
                start = page.control_state(control)
                for _ in range(moves):
                    try:
                        ms, _, direction = page.timed_change(panel, control, direction, timeout)
                        python.append(python_ms(page.last_note()))
                    except (TimeoutError, RuntimeError) as e:
                        shot = page.screenshot(f"bench-{control.kind}-{panel.index}")
                        note = f"no new image within {timeout:.0f} s ({e}); screenshot {shot}"
                        break
                    times.append(ms)
                rows.append((name, panel.cell, control.description, control.kind, times,
                             [p for p in python if p is not None], note))
                # Back where the notebook set it (untimed), so the next control is timed with
                # the others at the notebook's values.
                if not note:
                    page.restore(panel, control, start, timeout)
    finally:
        page.close()
        server.shutdown_kernels()
    return rows, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", default=H.NOTEBOOKS,
                    help="notebook file names in notebooks/ (default: all)")
    ap.add_argument("--moves", type=int, default=5, help="moves per control (default 5)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for a new image after a move (default 60)")
    args = ap.parse_args(argv)
    reason = H.missing_requirements()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    unknown = [n for n in args.notebooks if n not in H.NOTEBOOKS]
    if unknown:
        print(f"unknown notebooks {unknown}; choose from {H.NOTEBOOKS}", file=sys.stderr)
        return 2

    print(f"browser: {chromium_version(H.find_chromium())}, headless; Python "
          f"{platform.python_version()}; {os.cpu_count()} CPUs; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at start")
    rows, infos = [], {}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="featviz-bench-") as tmp, \
            H.LabServer(Path(tmp), notebooks=args.notebooks,
                        env={TIMING_VARIABLE: "1"}) as server, H.chromium() as browser:
        context = H.new_context(browser)
        for name in args.notebooks:
            r, info = bench_notebook(context, server, name, args.moves, args.timeout)
            rows += r
            infos[name] = info
            print(f"  {name}: opened in {info.get('open', float('nan')):.1f} s, ran in "
                  f"{info.get('run all', float('nan')):.1f} s, {len(r)} controls", flush=True)
            for cell, err in info.get("errors", []):
                print(f"    error output in cell {cell}: {err.splitlines()[0]}")
        context.close()

    print(f"\ninput event -> new image in the page, {args.moves} moves per control "
          f"(ms; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end)\n")
    header = ("notebook", "widget", "kind", "median ms", "max ms", "Python median", "Python max")
    table = []
    for name, cell, desc, kind, times, python, note in rows:
        med = f"{statistics.median(times):.0f}" if times else "-"
        mx = f"{max(times):.0f}" if times else "-"
        pmed = f"{statistics.median(python):.0f}" if python else "-"
        pmx = f"{max(python):.0f}" if python else "-"
        table.append((Path(name).stem, desc, kind, med, mx, pmed, pmx))
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    fmt = " | ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(fmt.format(*header))
    print("-+-".join("-" * w for w in widths))
    for r in table:
        print(fmt.format(*r))
    notes = [(n, d, note) for n, _, d, _, t, _, note in rows if note]
    for n, d, note in notes:
        print(f"\n{n} / {d}: {note}")
    if any(len(t) < args.moves for *_, t, _, _ in rows):
        print("\nsome controls have fewer than the requested moves (see the notes above)")
    print(f"\ntotal {time.monotonic() - t0:.0f} s")
    return 1 if notes else 0


if __name__ == "__main__":
    sys.exit(main())
