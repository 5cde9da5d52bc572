"""The ``l335q`` command line: a thin layer over the core (specs, submit, runner, results).

Embedded mode (no ``L335Q_BROKER_URL``): ``submit`` runs the jobs in-process into the SQLite file.
Service mode: ``submit`` enqueues the jobs on Celery; ``l335q worker`` processes run them.
User errors print one line ``error: ...`` and exit 2.
"""
from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path

import click

from l335q import UserError

# Commands that live in their own modules, imported only when called (name -> "module:attribute").
LAZY = {
    "params": "l335q.cli.classify:params",
    "design": "l335q.cli.classify:design",
    "fit": "l335q.cli.fields:fit",
    "report": "l335q.cli.report:report",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(LAZY))

    def get_command(self, ctx, name):
        if name in LAZY:
            module, attr = LAZY[name].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except (ModuleNotFoundError, AttributeError):
                return None
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose):
    """l335q — batch jobs for vision-learning experiments (specs -> jobs -> database -> tables, plots)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "celery", "kombu", "matplotlib", "PIL", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _progress(total: int, label: str):
    return click.progressbar(length=total, label=label, show_eta=True, show_pos=True, file=sys.stderr)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--wait", "wait_", is_flag=True, help="Show progress until every job is final (service mode); "
              "exit 1 if any job failed or diverged.")
@click.option("--queue", default="l335q", show_default=True, help="Celery queue (service mode).")
@click.option("--fresh", is_flag=True, help="Recompute every seed (by default seeds already measured with the "
              "same params, inputs and engine version are reused).")
@click.option("--dry-run", is_flag=True, help="Write nothing; print the plan: jobs, seeds reused and to run, and "
              "an estimate of the time.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output of --dry-run.")
def submit(spec, wait_, queue, fresh, dry_run, fmt):
    """Validate SPEC (YAML), store the submission and its jobs, and run or enqueue them. Seeds measured before
    under the same result key are not run again (their rows are copied); see --fresh and --dry-run."""
    from l335q import service
    from l335q.specs import load_spec_file

    raw = load_spec_file(spec)
    if fresh:
        raw["fresh"] = True
    if dry_run:
        from l335q.db import ensure_schema
        from l335q.plan import plan

        ensure_schema()
        found = plan(raw, Path(spec).parent)
        click.echo(json.dumps(found.as_json()) if fmt == "json" else found.text())
        return
    if not service.service_mode():
        sub_id = _run_embedded(raw, Path(spec).parent)
        click.echo(sub_id)
        _exit_on_failures(sub_id)
        return
    sub = service.submit(raw, Path(spec).parent, queue)
    click.echo(sub.id)
    reused = f" ({len(sub.reused_ids)} done at once from earlier results)" if sub.reused_ids else ""
    click.echo(f"submission {sub.id}: {len(sub.job_ids)} jobs queued on {queue!r}{reused}", err=True)
    if wait_:
        _wait(sub.id, len(sub.job_ids) + len(sub.reused_ids))
        _exit_on_failures(sub.id)


def _run_embedded(raw: dict, base_dir: Path | None) -> int:
    """Store the submission, then run its jobs in this process with a progress bar (embedded mode)."""
    from l335q import service

    def run_here(job_ids):
        click.echo(f"{len(job_ids)} jobs to run, running in-process (embedded mode)", err=True)
        with _progress(len(job_ids), "jobs") as bar:
            service.run_embedded(job_ids, on_job=lambda *_: bar.update(1))

    sub = service.submit(raw, base_dir, run_here=run_here)
    _print_status(sub.id)
    return sub.id


def _exit_on_failures(sub_id: int) -> None:
    """One line per distinct error with its job ids, then exit 1, when any job failed or diverged."""
    from l335q.service import failures

    found = failures(sub_id)
    for error, ids in found:
        shown = ", ".join(map(str, ids[:20])) + (f" … ({len(ids)} jobs)" if len(ids) > 20 else "")
        click.echo(f"error: job{'s' if len(ids) > 1 else ''} {shown}: {error}", err=True)
    if found:
        sys.exit(1)


# The main job of the quick start: the practical's first task at a size a 2-core CPU runs in minutes.
DEMO_SPECS = [
    {"task": "cls-compare", "title": "demo: Quickstart FCN vs CNN (10k training images, 5 epochs, 2 seeds)",
     "seeds": [0, 1], "epochs": 5, "train_subset": 10000},
]


@cli.command()
@click.option("--out", default="l335q-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the figures.")
def demo(out):
    """Run the main study on embedded defaults and print its tables (about 5 minutes on an idle 2-core CPU)."""
    from l335q.config import broker_url
    from l335q.db import session_scope
    from l335q.results import load, render, table_of
    from l335q.tasks import get_kind

    if broker_url():
        raise UserError("`l335q demo` runs in embedded mode: unset L335Q_BROKER_URL (or use `l335q submit`)")
    for raw in DEMO_SPECS:
        sub_id = _run_embedded(raw, None)
        kind = get_kind(raw["task"])
        with session_scope() as s:
            data = load(s, sub_id, None)
            click.echo(render(table_of(kind, data)))
            figure = Path(out) / f"{raw['task']}.png"
            kind.plot(data, figure)
        click.echo(f"figure: {figure}\n")


def _wait(sub_id: int, total: int) -> None:
    from l335q.service import wait

    with _progress(total, f"submission {sub_id}") as bar:
        seen = [0]

        def tick(done, _total):
            bar.update(done - seen[0])
            seen[0] = done

        wait(sub_id, tick, poll=2.0)
    _print_status(sub_id)


def _print_status(sub_id: int) -> None:
    from l335q.service import job_counts

    counts = job_counts(sub_id)
    click.echo(f"submission {sub_id}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), err=True)


@cli.command()
@click.argument("submission_id", type=int, required=False)
@click.option("--limit", default=10, show_default=True, help="How many recent submissions without an ID.")
def status(submission_id, limit):
    """Job counts by state, for one submission or the most recent ones."""
    from l335q.config import database_url
    from l335q.status import read

    for sub in read(database_url(), submission_id, limit):
        click.echo(sub.line())
        for line in sub.lines:
            click.echo(line)


@cli.command()
@click.option("--task", required=True, help="Task kind, e.g. cls-compare, inr-init.")
@click.option("--submission", "submission_id", type=int, help="Submission id (default: the latest of that task).")
@click.option("--table", "fmt", flag_value="table", default=True, help="A text table (default).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), help="Output format.")
@click.option("--merge", is_flag=True, help="One table over every submission of the task with the same title as "
              "this one (a study grown over several submissions), each cell's seed counted once.")
def results(task, submission_id, fmt, merge):
    """Results of a submission as a table, CSV or JSON."""
    from l335q.db import session_scope
    from l335q.results import load, render, table_of
    from l335q.tasks import get_kind

    kind = get_kind(task, "--task")
    with session_scope() as s:
        table = table_of(kind, load(s, submission_id, task, merge=merge))
    click.echo(render(table, fmt or "table"))


@cli.command()
@click.option("--task", required=True, help="Task kind (or view, e.g. cls-features).")
@click.option("--submission", "submission_id", type=int, help="Submission id (default: the latest of that task).")
@click.option("--job", "job_id", type=int, help="One job (for per-job views such as cls-features).")
@click.option("--samples", help="Comma-separated test-image indices (cls-features).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
def plot(task, submission_id, job_id, samples, out):
    """Draw a figure of a submission's (or a job's) results."""
    from l335q.db import session_scope
    from l335q.report import plot_to

    with session_scope() as s:
        plot_to(s, task, submission_id, job_id, samples, Path(out), "--task")
    click.echo(out)


@cli.command()
@click.option("--job", "job_id", type=int, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
def images(job_id, out):
    """Write a job's stored images (PNG artifacts) to files in OUT."""
    from sqlalchemy import select

    from l335q.db import Artifact, Job, session_scope

    with session_scope() as s:
        if s.get(Job, job_id) is None:
            raise UserError(f"no job with id {job_id}")
        arts = list(s.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.media_type == "image/png")))
        Path(out).mkdir(parents=True, exist_ok=True)
        for a in arts:
            name = a.name.replace("/", "_").replace(":", "_")
            path = Path(out) / (name if name.endswith(".png") else name + ".png")
            path.write_bytes(a.data)
            click.echo(path)
    if not arts:
        click.echo(f"job {job_id} has no images", err=True)


@cli.command()
@click.argument("submission_id", type=int)
def cancel(submission_id):
    """Cancel a submission's queued jobs (running ones finish)."""
    from l335q.service import cancel as cancel_jobs

    click.echo(f"submission {submission_id}: {cancel_jobs(submission_id)} queued jobs cancelled")


@cli.command()
@click.argument("submission_id", type=int)
@click.option("--queue", default="l335q", show_default=True)
@click.option("--running", is_flag=True, help="Also running jobs whose lease expired (their process is gone).")
def retry(submission_id, queue, running):
    """Run a submission's failed, diverged, cancelled and waiting jobs again."""
    from l335q import service

    def run_here(job_ids):
        click.echo(f"submission {submission_id}: {len(job_ids)} jobs to run again", err=True)
        with _progress(len(job_ids), "jobs") as bar:
            service.run_embedded(job_ids, on_job=lambda *_: bar.update(1))

    ids = service.retry(submission_id, queue, include_running=running, run_here=run_here)
    click.echo(f"submission {submission_id}: {len(ids)} jobs run again")


@cli.command()
def reap():
    """Re-queue jobs whose worker is gone and re-publish queued jobs whose broker message is gone."""
    from l335q import service

    service.check_services()
    result = service.reap()
    click.echo(result.text())
    if result.requeued and not service.service_mode():
        click.echo("embedded mode: run `l335q retry SUBMISSION` to run the re-queued jobs", err=True)


@cli.command()
@click.option("--concurrency", default=1, show_default=True, help="Jobs at once (one per GPU is usual).")
@click.option("--queues", default="l335q", show_default=True, help="Comma-separated queues to consume.")
@click.option("--device", help="Device for jobs that say `auto`, e.g. cuda:0 or cpu.")
@click.option("--name", help="Worker name shown in `status` (default celery@HOST); e.g. gpu0@%h.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True),
              help="Seconds a job may run when its spec sets no time_limit (sets L335Q_TIME_LIMIT_S).")
def worker(concurrency, queues, device, name, time_limit):
    """Start a Celery worker (needs L335Q_BROKER_URL and L335Q_DATABASE_URL)."""
    import os

    from l335q.config import broker_url
    from l335q.db import ensure_schema

    if time_limit:
        os.environ["L335Q_TIME_LIMIT_S"] = str(time_limit)
    if not broker_url():
        raise UserError("L335Q_BROKER_URL is not set: a worker needs a broker (e.g. redis://127.0.0.1:6379/0)")
    ensure_schema()
    from l335q.worker.app import start

    start(concurrency, queues, device, name=name)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8335, show_default=True, type=int)
@click.option("--queue", help="Queue that submit and retry publish on when a request names none (default l335q).")
def api(host, port, queue):
    """Serve the HTTP API and the web view (submit, status, results, figures, reports, cancel, retry)."""
    import os

    from l335q.db import ensure_schema

    if queue:
        os.environ["L335Q_API_QUEUE"] = queue
    ensure_schema()
    import uvicorn

    uvicorn.run("l335q.api.app:app", host=host, port=port, log_level="info")


@cli.group()
def db():
    """Database administration."""


@db.command()
def upgrade():
    """Create or migrate the tables to the newest schema."""
    from l335q.config import database_url, redact
    from l335q.db import upgrade as do_upgrade

    do_upgrade()
    click.echo(f"database at {redact(database_url())} is at the newest schema")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
