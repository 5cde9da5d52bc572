"""``l335q report``: submissions as one self-contained HTML file (the core's ``l335q.report``)."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import click

from l335q import UserError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def period(value: str) -> timedelta:
    """``12h``, ``30m``, ``2d``, ``90s`` -> a timedelta; anything else is a one-line error."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value or "")
    if not m or float(m[1]) <= 0:
        raise UserError(f"--since {value!r}: expected a period such as 12h, 30m, 2d or 90s")
    return timedelta(seconds=float(m[1]) * UNITS[m[2]])


@click.command()
@click.argument("submission_ids", metavar="[SUBMISSION]...", type=int, nargs=-1)
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="HTML file to write.")
@click.option("--since", help="Instead: a digest of every submission of the last period (12h, 30m, 2d), "
                              "failures grouped by error, printed.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="The digest's format (with --since).")
def report(submission_ids, out, since, fmt):
    """One HTML file of SUBMISSIONs (default: the latest): spec, job states and errors, table, figure, stored
    images; with several of one task kind, a comparison of their rows and of the spec keys that differ.
    It embeds everything and fetches nothing: it works opened from disk, offline. With --since: the night's
    digest instead (every submission of the period, its counts, duration and notification; failures by error)."""
    from sqlalchemy import select

    from l335q.db import Submission, get_submission, session_scope
    from l335q.report import report_html

    if since is not None:
        from l335q.notify import digest, digest_text

        if submission_ids:
            raise UserError("--since covers every submission of the period: give no SUBMISSION with it")
        span = period(since)
        with session_scope() as s:
            d = digest(s, span)
        click.echo(json.dumps(d, indent=2) if fmt == "json" else digest_text(d))
        return
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
