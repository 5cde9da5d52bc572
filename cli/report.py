"""``l335q report``: submissions as one self-contained HTML file (the core's ``l335q.report``)."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("submission_ids", metavar="[SUBMISSION]...", type=int, nargs=-1)
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="HTML file to write.")
def report(submission_ids, out):
    """One HTML file of SUBMISSIONs (default: the latest): spec, job states and errors, table, figure, stored
    images; with several of one task kind, a comparison of their rows and of the spec keys that differ.
    It embeds everything and fetches nothing: it works opened from disk, offline."""
    from sqlalchemy import select

    from l335q import UserError
    from l335q.db import Submission, get_submission, session_scope
    from l335q.report import report_html

    path = Path(out)
    if not path.parent.is_dir():
        raise UserError(f"--out: folder {path.parent} does not exist")
    with session_scope() as s:
        if not submission_ids:
            latest = s.scalar(select(Submission.id).order_by(Submission.id.desc()).limit(1))
            if latest is None:
                raise UserError("no submission in the database yet")
            submission_ids = (latest,)
        for i in submission_ids:
            get_submission(s, i)
        html = report_html(s, list(submission_ids), static=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    click.echo(str(path))
