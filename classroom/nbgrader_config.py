# nbgrader configuration for teaching featviz as graded assignments.
#
# Run every nbgrader command from this folder (`cd classroom`): it is the course directory.
# The six notebooks are one assignment, `featviz`; `source/featviz` is a link to ../notebooks,
# so the notebooks you read are the nbgrader source notebooks (there is no second copy).
# nbgrader writes release/, submitted/, autograded/, feedback/ and gradebook.db here.
import logging
import os
import sys
import warnings
from pathlib import Path

c = get_config()  # noqa: F821 - provided by nbgrader when it reads this file

HERE = Path(__file__).resolve().parent          # this folder, wherever nbgrader runs from
if str(HERE) not in sys.path:                   # feedback_preprocessors.py lives beside this file
    sys.path.insert(0, str(HERE))

c.CourseDirectory.course_id = "featviz"

# ------------------------------------------------------------------ how autograde runs a notebook
# contained_execute.py's ContainedExecute replaces nbgrader's Execute: each notebook may run
# 600 s (kernel start included) and each kernel may use 4 GiB; a notebook that runs past its
# time, or whose kernel dies, is stopped there and scored for what ran; cells tagged
# skip-when-grading (demonstrations that do not depend on the student's code) are not run.
# Grading a correct submission (all six notebooks) costs about 80 CPU-seconds on a quiet 2-core
# machine, nbgrader's own work included (benchmarks/bench_grading.py --nbgrader).
if (HERE / "contained_execute.py").is_file():
    from nbgrader.converters import Autograde
    from contained_execute import ContainedExecute
    from nbgrader.preprocessors import Execute

    c.Autograde.autograde_preprocessors = [
        ContainedExecute if p is Execute else p
        for p in Autograde.class_traits()["autograde_preprocessors"].default()]
    c.ContainedExecute.notebook_timeout = 600
    c.ContainedExecute.memory_limit_gib = 4
# Other commands that run notebooks (`nbgrader validate`) use nbgrader's Execute: a per-cell limit
# (its default, 30 s, is shorter than the notebooks' slowest demonstrations on a busy machine).
c.Execute.timeout = 600

# ------------------------------------------------------------------ the exchange
# nbgrader's default exchange is /usr/local/share/nbgrader/exchange (create it once, writable by
# everyone: see README.md). To use another folder, uncomment and edit:
# c.Exchange.root = "/srv/nbgrader/exchange"

# ------------------------------------------------------------------ zip_collect (an LMS)
# The archive (or loose files) go in downloaded/featviz/archive/; every notebook in it must be
# named <student id>_<anything>_<notebook>.ipynb, or <student id>_<notebook>.ipynb, e.g.
# alice_01_first_layer_filters.ipynb or alice_attempt1_02_saliency.ipynb: the student id is the
# part before the first "_" (letters, digits, ".", "-", "@"), the notebook is the released name
# (two digits, "_", its name) at the end. nbgrader matches the whole path, folders included.
c.FileNameCollectorPlugin.named_regexp = (
    r"^(?:.*[/\\])?(?P<student_id>[A-Za-z0-9.@-]+)_(?:[^/\\]*_)?"
    r"(?P<file_id>\d\d_[A-Za-z0-9_]+\.ipynb)$"
)

# ------------------------------------------------------------------ feedback that reads offline
# nbgrader 0.9's generate_feedback runs GetGrades and CSSHTMLHeaderPreprocessor only, and its page
# loads MathJax and the widget renderer from the internet. Here the feedback also
# * drops the hidden tests' source (and tracebacks that quote it),
# * says "not run when grading" under each skipped demonstration,
# * shows each slider panel as its last drawing (from the widget state saved by autograde),
# * writes every formula as readable text (no maths renderer needed), and
# * loads no script from the internet: MathJax only if one is installed locally (below).
# A course folder holding only this file (no feedback_preprocessors.py and templates/ beside it)
# keeps nbgrader's own feedback page.
OFFLINE_FEEDBACK = (HERE / "feedback_preprocessors.py").is_file() and \
    (HERE / "contained_execute.py").is_file() and (HERE / "templates" / "featviz_feedback").is_dir()
if OFFLINE_FEEDBACK:
    c.GenerateFeedback.preprocessors = [
        "nbgrader.preprocessors.GetGrades",
        "feedback_preprocessors.HideHiddenTests",
        "feedback_preprocessors.SkippedDemonstrations",
        "feedback_preprocessors.StaticWidgets",
        "feedback_preprocessors.ReadableMath",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    ]
    _NBGRADER_TEMPLATES = None
    try:
        import nbgrader as _nbgrader

        _NBGRADER_TEMPLATES = os.path.join(os.path.dirname(_nbgrader.__file__), "server_extensions",
                                           "formgrader", "templates")
    except ImportError:  # pragma: no cover - this file is only read by nbgrader
        pass
    c.HTMLExporter.template_name = "featviz_feedback"   # templates/featviz_feedback, based on nbgrader's
    c.HTMLExporter.template_file = "featviz_feedback.html.j2"
    c.HTMLExporter.extra_template_basedirs = [str(HERE / "templates")] + (
        [_NBGRADER_TEMPLATES] if _NBGRADER_TEMPLATES else [])


    def _local_mathjax() -> str:
        """A file:// URL of a MathJax 2 installed on this machine, or "" (formulas stay text)."""
        candidates = []
        try:
            import importlib.util

            spec = importlib.util.find_spec("jupyter_server_mathjax")   # pip install jupyter-server-mathjax
            if spec and spec.origin:
                candidates.append(Path(spec.origin).parent / "static" / "MathJax.js")
        except (ImportError, ValueError):
            pass
        candidates.append(Path("/usr/share/javascript/mathjax/MathJax.js"))   # apt install libjs-mathjax
        for path in candidates:
            if path.is_file():
                return path.as_uri() + "?config=TeX-AMS_CHTML-full,Safe"
        return ""


    c.HTMLExporter.mathjax_url = _local_mathjax()

# ------------------------------------------------------------------ a readable log
# INFO shows each submission as it is converted and graded, and every real warning and error.
# Left out: what every run of this course says and means nothing --
# * "Attribute 'checksum' for cell ...-hidden has changed!": the release removes the hidden
#   tests from the test cells, so their checksums differ by design (a changed checksum of any
#   other locked cell -- a student who edited it -- is still reported);
# * SQLAlchemy's "Object of type <...> not in session" warnings from nbgrader's gradebook code;
# * the grading kernel's note that it talks to the grader over local TCP.
c.Application.log_level = "INFO"
c.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]
warnings.filterwarnings("ignore", message=r"Object of type <\w+> not in session")


class _ExpectedNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        expected = (isinstance(record.msg, str)
                    and record.msg.startswith("Attribute '%s' for cell %s has changed!")
                    and len(record.args or ()) > 1 and record.args[0] == "checksum"
                    and "hidden" in str(record.args[1]))
        if expected:
            return False
        return True


for _name in ("AutogradeApp", "NbGraderApp"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _ExpectedNoise) for f in _logger.filters):
        _logger.addFilter(_ExpectedNoise())
