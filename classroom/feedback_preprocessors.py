"""Preprocessors that make `nbgrader generate_feedback` HTML read offline and keep hidden tests hidden.

`nbgrader_config.py` (in this folder) adds this folder to ``sys.path`` and lists these classes
in ``c.GenerateFeedback.preprocessors``. Only the standard library, nbgrader and this folder's
``contained_execute`` are imported: every nbgrader command reads the config, so this module
must stay cheap to import.

* :class:`HideHiddenTests` — nbgrader's ``ClearHiddenTests`` (the hidden test region of each
  test cell goes, as in the student release) and, in those cells, an error's traceback (which
  quotes the cell's source) is cut to its last line, ``ErrorName: message``.
* :class:`SkippedDemonstrations` — a demonstration the grader skipped (``skip-when-grading``)
  shows a one-line note saying so, not an empty output.
* :class:`StaticWidgets` — a slider/dropdown panel (an ipywidgets view) becomes a static copy
  of its last drawing, rebuilt from the widget state that the autograder saved in the notebook,
  or a one-line note when there is none; the notebook's widget state is then dropped, so the
  page loads no widget script from the internet.
* :class:`ReadableMath` — every ``$…$`` / ``$$…$$`` formula of the markdown cells becomes
  plain HTML text (Greek letters, ∂, Σ, fractions as a/b, sub- and superscripts), readable
  without any maths renderer; the TeX is kept in a ``data-tex`` attribute, and the feedback
  template (``templates/featviz_feedback``) hands it to MathJax when a local MathJax loads.
"""
from __future__ import annotations

import html
import re

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from nbgrader import utils

from contained_execute import SKIP_WHEN_GRADING

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


# ---------------------------------------------------------------- hidden tests

class HideHiddenTests(ClearHiddenTests):
    """ClearHiddenTests, and no traceback that quotes a hidden test's source."""

    def preprocess_cell(self, cell, resources, cell_index):
        had_hidden = (cell.cell_type == "code"
                      and self.begin_test_delimeter in cell.source)
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if had_hidden or (cell.cell_type == "code" and utils.is_grade(cell)
                          and "hidden" in cell.metadata.get("nbgrader", {}).get("grade_id", "")):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: "
                                           f"{output.get('evalue', '')}"]
        return cell, resources


# ---------------------------------------------------------------- skipped demonstrations

NOTE_SKIPPED = ("Not run when grading: a demonstration that does not depend on your code. "
                "Run the notebook in Jupyter to see it.")


class SkippedDemonstrations(NbGraderPreprocessor):
    """A cell the grader skipped (tagged ``skip-when-grading``) says so instead of showing
    nothing."""

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code" and SKIP_WHEN_GRADING in cell.metadata.get("tags", []) \
                and not cell.get("outputs"):
            cell.outputs = [NotebookNode(output_type="stream", name="stdout",
                                         text=NOTE_SKIPPED + "\n")]
        return cell, resources


# ---------------------------------------------------------------- widget panels

NOTE_STATIC = ("A copy of this panel as the grader last drew it; open the notebook in "
               "Jupyter to move its controls.")
NOTE_EMPTY = "(An interactive panel: open the notebook in Jupyter to use it.)"


def _ref(value):
    return value[len("IPY_MODEL_"):] if isinstance(value, str) and value.startswith("IPY_MODEL_") \
        else None


class _WidgetRenderer:
    """Static HTML for one widget tree of a saved widget state."""

    def __init__(self, state: dict):
        self.state = state
        self.images = 0

    def model(self, model_id):
        entry = self.state.get(model_id)
        return entry if isinstance(entry, dict) else None

    def render(self, model_id, depth=0) -> str:
        entry = self.model(model_id)
        if entry is None or depth > 50:
            return ""
        name = entry.get("model_name", "")
        st = entry.get("state", {})
        layout = self.model(_ref(st.get("layout")) or "")
        width = (layout or {}).get("state", {}).get("width") or ""
        if name in ("VBoxModel", "HBoxModel", "BoxModel", "GridBoxModel"):
            inner = "".join(self.render(_ref(c), depth + 1) for c in st.get("children", []))
            direction = "column" if name == "VBoxModel" else "row"
            return (f'<div style="display:flex;flex-direction:{direction};flex-wrap:wrap;'
                    f'gap:4px">{inner}</div>')
        if name in ("HTMLModel", "HTMLMathModel"):
            return f'<div>{st.get("value", "")}</div>'
        if name == "LabelModel":
            return f'<div>{html.escape(str(st.get("value", "")))}</div>'
        if name == "ImageModel":
            data = next((b.get("data") for b in entry.get("buffers", [])
                         if b.get("path") == ["value"] and b.get("encoding") == "base64"), None)
            if not data:
                return ""
            self.images += 1
            style = f' style="width:{html.escape(width)}"' if width else ""
            fmt = html.escape(st.get("format", "png"))
            return f'<img alt="a picture of the panel" src="data:image/{fmt};base64,{data}"{style}>'
        if "description" in st and "value" in st or "index" in st:
            value = st.get("value")
            labels = st.get("_options_labels")
            if labels is not None and isinstance(st.get("index"), int):
                value = labels[st["index"]]
            desc = st.get("description", "")
            return (f'<div style="font-size:12px;color:#555">{html.escape(str(desc))}: '
                    f'<b>{html.escape(str(value))}</b></div>')
        return ""


class StaticWidgets(NbGraderPreprocessor):
    """Widget views → their last drawing (from the saved widget state) or a note."""

    def preprocess(self, nb, resources):
        widgets = nb.metadata.get("widgets", {})
        self.widget_state = (widgets.get(WIDGET_STATE, {}) or {}).get("state", {})
        nb, resources = super().preprocess(nb, resources)
        nb.metadata.pop("widgets", None)       # no widget state: no widget script from a CDN
        return nb, resources

    def preprocess_cell(self, cell, resources, cell_index):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            view = data.pop(WIDGET_VIEW)
            renderer = _WidgetRenderer(self.widget_state)
            picture = renderer.render(view.get("model_id", "")) if isinstance(view, dict) else ""
            if renderer.images:
                data["text/html"] = (f'<div class="featviz-static-panel">{picture}'
                                     f'<div style="color:#888;font-size:11px">{NOTE_STATIC}'
                                     f'</div></div>')
            else:
                data.pop("text/html", None)
                data["text/plain"] = NOTE_EMPTY
        return cell, resources


# ---------------------------------------------------------------- maths as text

SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν",
    "xi": "ξ", "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "varphi": "φ",
    "chi": "χ", "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ",
    "Lambda": "Λ", "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
    "partial": "∂", "nabla": "∇", "sum": "Σ", "prod": "∏", "int": "∫", "ell": "ℓ",
    "infty": "∞", "cdot": "·", "times": "×", "odot": "⊙", "otimes": "⊗", "pm": "±",
    "approx": "≈", "sim": "~", "in": "∈", "notin": "∉", "to": "→", "rightarrow": "→",
    "leftarrow": "←", "mapsto": "↦", "Rightarrow": "⇒", "le": "≤", "leq": "≤", "ge": "≥",
    "geq": "≥", "ne": "≠", "neq": "≠", "ll": "≪", "gg": "≫", "propto": "∝", "cdots": "…",
    "ldots": "…", "dots": "…", "top": "T", "lfloor": "⌊", "rfloor": "⌋", "lceil": "⌈",
    "rceil": "⌉", "lVert": "‖", "rVert": "‖", "Vert": "‖", "lvert": "|", "rvert": "|",
    "langle": "⟨", "rangle": "⟩", "mid": "|", "forall": "∀", "exists": "∃", "cup": "∪",
    "cap": "∩", "subset": "⊂", "circ": "∘", "star": "⋆", "max": "max", "min": "min",
    "log": "log", "exp": "exp", "arg": "arg", "sin": "sin", "cos": "cos", "tanh": "tanh",
    "det": "det", "lim": "lim", "sup": "sup", "inf": "inf",
    ",": "\u2009", ";": " ", ":": " ", " ": " ", "!": "", "quad": "\u2003",
    "qquad": "\u2003\u2003", "{": "{", "}": "}", "%": "%", "$": "$", "&": "&", "_": "_",
    "#": "#", "|": "‖", "\\": "; ",
}
SIZERS = {"big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "biggl", "biggr",
          "left", "right", "displaystyle", "textstyle", "limits", "nolimits"}
FONTS = {"text", "mathrm", "operatorname", "mathbf", "mathit", "mathsf", "mathtt", "mathcal",
         "boldsymbol", "textbf", "textit", "mbox"}
BLACKBOARD = {"R": "ℝ", "N": "ℕ", "Z": "ℤ", "Q": "ℚ", "C": "ℂ", "E": "𝔼", "1": "𝟙", "P": "ℙ"}
ACCENTS = {"bar": "\u0304", "hat": "\u0302", "tilde": "\u0303", "vec": "\u20d7",
           "dot": "\u0307", "overline": "\u0305", "widehat": "\u0302"}
_UNSAFE = re.compile(r"[&<>\"'\\`*_\[\]$~|#]")
_TOKEN = re.compile(r"\\([A-Za-z]+|.)|(\s+)|(.)", re.S)


def _md_safe(text: str) -> str:
    """HTML-escaped text that markdown leaves as it is."""
    return _UNSAFE.sub(lambda m: f"&#{ord(m.group())};", text)


class _Tex:
    """A small TeX → HTML-text converter for the formulas of the notebooks."""

    def __init__(self, tex: str):
        self.tokens = [(m.group(1), m.group(2), m.group(3)) for m in _TOKEN.finditer(tex)]
        self.i = 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def skip_space(self):
        while self.peek() and self.peek()[1]:
            self.i += 1

    def seq(self, stop=None) -> str:
        out = []
        while True:
            tok = self.peek()
            if tok is None:
                break
            cmd, space, ch = tok
            if ch == "}" and stop == "}":
                self.i += 1
                break
            if cmd == "end" and stop == "end":
                self.i += 1
                self.group()          # the environment's name
                break
            if ch in ("^", "_"):
                self.i += 1
                self.skip_space()
                arg = self.atom()
                tag = "sup" if ch == "^" else "sub"
                out.append(f"<{tag}>{arg.strip()}</{tag}>")
                continue
            out.append(self.atom())
        return "".join(out)

    def group(self) -> str:
        """The next argument: a {group}, a command or one character."""
        self.skip_space()
        return self.atom()

    def raw_group(self) -> str:
        """The next {group} as plain text (for \\text-like and environment names)."""
        self.skip_space()
        tok = self.peek()
        if tok and tok[2] == "{":
            self.i += 1
            depth, parts = 1, []
            while self.peek():
                cmd, space, ch = self.take()
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        break
                parts.append(("\\" + cmd) if cmd else (space or ch))
            return "".join(parts)
        return self.atom_text()

    def atom_text(self) -> str:
        tok = self.take()
        if tok is None:
            return ""
        cmd, space, ch = tok
        return ("\\" + cmd) if cmd else (space or ch)

    def atom(self) -> str:
        tok = self.take()
        if tok is None:
            return ""
        cmd, space, ch = tok
        if space:
            return " "
        if ch is not None:
            if ch == "{":
                return self.seq(stop="}")
            if ch == "&":
                return ", "
            if ch == "~":
                return " "
            return _md_safe(ch)
        if cmd in SIZERS:
            if cmd in ("left", "right") and self.peek() and self.peek()[2] == ".":
                self.i += 1                      # \left. and \right. draw nothing
            return ""
        if cmd in FONTS:
            text = self.raw_group()
            return _md_safe(_Tex(text).plain()) if cmd != "text" else _md_safe(text)
        if cmd == "mathbb":
            text = self.raw_group().strip()
            return _md_safe("".join(BLACKBOARD.get(c, c) for c in text))
        if cmd in ("frac", "tfrac", "dfrac"):
            num, den = self.group(), self.group()
            wrap = lambda s: s if len(re.sub(r"<[^>]+>|&#?\w+;", "x", s)) <= 1 else f"({s})"
            return f"{wrap(num)}/{wrap(den)} "
        if cmd == "sqrt":
            return f"√({self.group()})"
        if cmd in ACCENTS:
            return f"{self.group()}{ACCENTS[cmd]}"
        if cmd in ("underbrace", "overbrace"):
            body = self.group()
            self.skip_space()
            if self.peek() and self.peek()[2] in ("_", "^"):
                self.i += 1
                self.group()
            return body
        if cmd == "begin":
            env = self.raw_group()
            body = self.seq(stop="end")
            return f"[{body}]" if "matrix" in env else body
        if cmd in SYMBOLS:
            sym = SYMBOLS[cmd]
            if cmd.isalpha() and len(cmd) > 1 and sym.isascii():
                return _md_safe(sym) + " "
            return _md_safe(sym)
        return _md_safe(cmd)                     # an unknown command: its name

    def html(self) -> str:
        return re.sub(r" {2,}", " ", self.seq()).strip()

    def plain(self) -> str:
        return html.unescape(re.sub(r"<[^>]+>", "", self.html()))


def tex_to_html(tex: str) -> str:
    return _Tex(tex).html()


_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?![\s$])(.+?)(?<![\s\\])\$", re.S)


def readable_math(markdown: str) -> str:
    """The markdown with each $…$ and $$…$$ formula as readable HTML text."""
    def one(m):
        display = m.group(1) is not None
        tex = m.group(1) if display else m.group(2)
        text = tex_to_html(tex.replace("\n", " "))
        style = ' style="display:block;text-align:center;margin:0.5em 0"' if display else ""
        return (f'<span class="featviz-math" data-display="{int(display)}" '
                f'data-tex="{_md_safe(tex)}"{style}>{text}</span>')
    parts = _CODE.split(markdown)
    return "".join(p if i % 2 else _MATH.sub(one, p) for i, p in enumerate(parts))


class ReadableMath(NbGraderPreprocessor):
    """Markdown formulas → HTML text that reads without MathJax (TeX kept in data-tex)."""

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "markdown" and "$" in cell.source:
            cell.source = readable_math(cell.source)
        return cell, resources
