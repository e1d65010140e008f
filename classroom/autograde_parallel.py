"""Autograde every collected submission with N workers, each running nbgrader's own autograde.

    python autograde_parallel.py featviz --workers 4              # on this machine
    python autograde_parallel.py featviz --dask                   # a Dask LocalCluster of --workers
    python autograde_parallel.py featviz --dask tcp://host:8786   # a running Dask cluster

Run it from the course folder (``classroom/``), where you run every nbgrader command. Each
student's submission is one job: ``nbgrader autograde ASSIGNMENT --student ID`` in its own
process, with the course's configuration (``nbgrader_config.py``: its limits, its skipped
demonstrations), writing ``autograded/<student>/`` as usual but its grades into a private copy
of the gradebook taken before the run. This command then copies each student's grades into the
course's one ``gradebook.db`` -- one writer, no SQLite locking between workers, and nothing
shared but the course folder -- so ``nbgrader export``, ``generate_feedback`` and the formgrader
see exactly what a serial ``nbgrader autograde`` leaves (``tests/test_classroom.py`` compares
the two). Don't grade in the formgrader while it runs: a student's rows are replaced by their
graded copy.

With ``--dask``, the jobs go to Dask (``dask.distributed``, the classroom extra): a
``LocalCluster`` of ``--workers`` processes when no address is given, or the scheduler at
ADDRESS. Every Dask worker must see the course folder at the same path (a shared filesystem)
and have the course installed; it runs nbgrader with its own Python.

Containment (``contained_execute.py``): each notebook has a wall-clock limit
(``--notebook-timeout``) and each kernel a memory limit (``--memory-limit``); a notebook that
loops, exhausts its memory or kills its kernel is stopped there, scored for what it completed,
and named in the report at the end. A whole job that runs past every notebook's limit together
(plus five minutes) is killed and reported; the others carry on. Each job's log is kept in
``autograde_logs/<assignment>/<student>.log``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from contained_execute import CONTAINED      # beside this file, in the course folder
JOB_SLACK_S = 300.0           # a job's limit: every notebook's limit together, plus this
# This process's nbgrader jobs → the folder each writes; on Ctrl+C both go (a rerun grades them).
RUNNING: dict[subprocess.Popen, Path] = {}


@dataclass
class Job:
    """What a worker needs to grade one student: all of it travels to a Dask worker."""
    course: str
    assignment: str
    student: str
    notebooks: int
    options: list[str]                      # extra nbgrader options (limits, --force)
    notebook_timeout: float
    threads: int


@dataclass
class Outcome:
    student: str
    returncode: int | None                  # None: killed at the job's limit
    seconds: float
    log: str
    gradebook: bytes | None                 # the private gradebook after grading
    contained: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.returncode != 0


def grade_one(job: Job, gradebook: bytes) -> Outcome:
    """Run ``nbgrader autograde`` for one student into a private copy of ``gradebook`` (the
    course's, as it was before the run); runs on a worker."""
    with tempfile.TemporaryDirectory(prefix="autograde-") as tmp:
        db = Path(tmp) / "gradebook.db"
        db.write_bytes(gradebook)
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):   # no worker oversubscribes the cores
            env[name] = str(job.threads)
        command = [sys.executable, "-m", "nbgrader", "autograde", job.assignment,
                   f"--student={job.student}", f"--db=sqlite:///{db}", *job.options]
        limit = job.notebooks * job.notebook_timeout + JOB_SLACK_S if job.notebook_timeout > 0 \
            else None
        start = time.monotonic()
        # Its own session, so that a kill reaches nbgrader and its kernel together.
        process = subprocess.Popen(command, cwd=job.course, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        RUNNING[process] = Path(job.course) / "autograded" / job.student / job.assignment
        try:
            log, _ = process.communicate(timeout=limit)
            returncode = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            log, _ = process.communicate()
            log += f"\nkilled: the job ran past its limit of {limit:g} s\n"
            returncode = None
        finally:
            RUNNING.pop(process, None)
        contained = [json.loads(line.split(f"{CONTAINED} ", 1)[1])
                     for line in log.splitlines() if f"{CONTAINED} {{" in line]
        return Outcome(job.student, returncode, time.monotonic() - start, log,
                       db.read_bytes() if db.is_file() else None, contained)


def snapshot(db: Path) -> bytes:
    """A consistent copy of an SQLite file, even while something else has it open."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy.db"
        source, target = sqlite3.connect(db), sqlite3.connect(copy)
        with target:
            source.backup(target)
        source.close()
        target.close()
        return copy.read_bytes()


def merge(course_db: Path, graded: bytes, assignment: str, student: str) -> None:
    """Copy one student's submission of ``assignment`` from a graded private gradebook into the
    course's: the student, the submission, and every notebook's, grade's and comment's columns."""
    from nbgrader.api import Gradebook, MissingEntry

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # nbgrader's own gradebook code sets off SQLAlchemy's "not in session" warnings
        warnings.filterwarnings("ignore", message=r"Object of type <\w+> not in session")
        private = Path(tmp) / "graded.db"
        private.write_bytes(graded)
        with Gradebook(f"sqlite:///{private}") as part, \
                Gradebook(f"sqlite:///{course_db}") as main:
            try:
                submission = part.find_submission(assignment, student)
            except MissingEntry:
                return                                  # nbgrader stopped before creating it
            person = part.find_student(student)
            main.update_or_create_student(student, **_columns(person, skip=("id",)))
            target = main.update_or_create_submission(assignment, student)
            _copy(submission, target)
            for notebook in submission.notebooks:
                mine = main.find_submission_notebook(notebook.name, assignment, student)
                _copy(notebook, mine)
                for grade in notebook.grades:
                    _copy(grade, main.find_grade(grade.name, notebook.name, assignment, student))
                for comment in notebook.comments:
                    _copy(comment, main.find_comment(comment.name, notebook.name, assignment,
                                                     student))
            main.db.commit()


def _columns(row, skip=()) -> dict:
    """A gradebook row's own columns: not its key, not its links to other rows."""
    return {c.name: getattr(row, c.name) for c in type(row).__table__.columns
            if not c.primary_key and not c.foreign_keys and c.name not in skip}


def _copy(source, target) -> None:
    for name, value in _columns(source).items():
        setattr(target, name, value)


def students_to_grade(course: Path, assignment: str, wanted: list[str], force: bool) -> tuple[
        list[str], list[str]]:
    """(students to grade, students skipped because already autograded) -- as nbgrader decides."""
    submitted = sorted(p.parent.name for p in (course / "submitted").glob(f"*/{assignment}")
                       if p.is_dir())
    if wanted:
        missing = sorted(set(wanted) - set(submitted))
        if missing:
            raise SystemExit(f"no submission of {assignment} for: {', '.join(missing)} "
                             f"(expected submitted/<student>/{assignment}/)")
        submitted = [s for s in submitted if s in wanted]
    done = [s for s in submitted if (course / "autograded" / s / assignment).is_dir()]
    if force:
        return submitted, []
    return [s for s in submitted if s not in done], done


def report(outcomes: list[Outcome], logs: Path) -> str:
    """What went wrong, student by student: the lines a teacher reads at the end."""
    lines = []
    for outcome in sorted(outcomes, key=lambda o: o.student):
        log = logs / f"{outcome.student}.log"
        for event in outcome.contained:
            lines.append(f"  {outcome.student}: {event['notebook']}, cell {event['cell']}: "
                         f"{event['why']} ({'the rest of the notebook was not run' if event['kind'] == 'stopped' else 'the cell failed'}; scored for what ran)")
        if outcome.returncode is None:
            lines.append(f"  {outcome.student}: killed at the job's time limit; graded notebooks "
                         f"kept, see {log}")
        elif outcome.returncode != 0:
            lines.append(f"  {outcome.student}: nbgrader failed (exit {outcome.returncode}); "
                         f"see {log}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Autograde every collected submission in parallel with nbgrader.")
    parser.add_argument("assignment")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="jobs at once (default: half the CPUs); the size of a --dask "
                             "LocalCluster")
    parser.add_argument("--dask", nargs="?", const="local", metavar="ADDRESS",
                        help="hand the jobs to Dask: a LocalCluster, or the scheduler at ADDRESS")
    parser.add_argument("--student", action="append", default=[],
                        help="grade only this student (repeatable)")
    parser.add_argument("--force", action="store_true", help="regrade already autograded ones")
    parser.add_argument("--notebook-timeout", type=float, default=None,
                        help="seconds per notebook (default: the course config's, 600)")
    parser.add_argument("--memory-limit", type=float, default=None,
                        help="GiB per grading kernel (default: the course config's, 4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per grading kernel (default: CPUs / workers, at least 1)")
    args = parser.parse_args(argv)

    # Ctrl+C (SIGINT, even where a background shell set it to be ignored) and `kill` (SIGTERM)
    # stop the run the same way: no job is left running on its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    course = Path.cwd()
    db = course / "gradebook.db"
    if not (course / "nbgrader_config.py").is_file() or not db.is_file():
        raise SystemExit("run this from the course folder (classroom/), after "
                         "`nbgrader generate_assignment`: no nbgrader_config.py or gradebook.db here")
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    students, skipped = students_to_grade(course, args.assignment, args.student, args.force)
    if skipped:
        print(f"{len(skipped)} already autograded, not regraded (add --force to regrade)")
    if not students:
        print(f"nothing to grade in submitted/*/{args.assignment}/")
        return 0

    configured = _configured(course, "notebook_timeout", 600.0)    # also: the config loads
    notebook_timeout = args.notebook_timeout if args.notebook_timeout is not None else configured
    options = ["--force"] if args.force else []
    options.append(f"--ContainedExecute.notebook_timeout={notebook_timeout}")
    if args.memory_limit is not None:
        options.append(f"--ContainedExecute.memory_limit_gib={args.memory_limit}")
    notebooks = len(list((course / "source" / args.assignment).glob("*.ipynb")))
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    before = snapshot(db)
    jobs = [Job(str(course), args.assignment, s, notebooks, options, notebook_timeout, threads)
            for s in students]
    logs = course / "autograde_logs" / args.assignment
    logs.mkdir(parents=True, exist_ok=True)

    outcomes, failures = [], 0
    start = time.monotonic()
    with tqdm(total=len(jobs), unit="submission", desc=f"autograde {args.assignment}") as bar:
        bar.set_postfix(failures=0)
        try:
            for outcome in _run(jobs, before, args):
                (logs / f"{outcome.student}.log").write_text(outcome.log, encoding="utf-8")
                if outcome.gradebook:
                    merge(db, outcome.gradebook, args.assignment, outcome.student)
                outcomes.append(outcome)
                failures += bool(outcome.failed or outcome.contained)
                bar.set_postfix(failures=failures)
                bar.update(1)
        except KeyboardInterrupt:
            _kill_running()
            print(f"\ninterrupted: {len(outcomes)} of {len(jobs)} submissions graded and in "
                  f"the gradebook; run the command again to grade the rest")
            return 130
    wall = time.monotonic() - start
    print(f"autograded {len(outcomes)} submissions of {args.assignment} in {wall:.0f} s "
          f"with {args.workers} worker(s){' on Dask' if args.dask else ''}; logs in {logs}")
    problems = report(outcomes, logs)
    if problems:
        print(f"{failures} submission(s) misbehaved:\n{problems}")
    return 1 if any(o.failed for o in outcomes) else 0


def _kill_running() -> None:
    """Kill every nbgrader job this process started (and its kernel): none is left running on
    its own. Their half-written autograded folders go too, or a rerun would skip them as done."""
    for process, folder in list(RUNNING.items()):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _run(jobs: list[Job], gradebook: bytes, args):
    """Each job's Outcome as it completes: threads that each wait on one nbgrader process, or
    Dask."""
    if not args.dask:
        pool = ThreadPoolExecutor(max_workers=args.workers)
        try:
            for future in as_completed([pool.submit(grade_one, job, gradebook) for job in jobs]):
                yield future.result()
        except BaseException:                   # Ctrl+C: stop the queue and what runs now
            pool.shutdown(wait=False, cancel_futures=True)
            _kill_running()
            raise
        pool.shutdown()
        return
    try:
        import cloudpickle
        from dask.distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError as error:
        raise SystemExit(f"--dask needs dask.distributed ({error}): "
                         "pip install -e '.[classroom]'") from None
    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers need not import this file
    if args.dask == "local":
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        cluster, client = None, Client(args.dask)
    try:
        shared = client.scatter(gradebook, broadcast=True)      # sent to each worker once
        futures = [client.submit(grade_one, job, shared, pure=False,
                                 key=f"autograde-{job.student}") for job in jobs]
        for future in dask_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _configured(course: Path, name: str, default: float) -> float:
    """A ContainedExecute setting from the course's nbgrader_config.py, or its default."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    return float(config.ContainedExecute.get(name, default))


if __name__ == "__main__":
    sys.exit(main())
