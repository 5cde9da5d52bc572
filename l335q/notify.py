"""The morning message: when a submission's last job ends, one webhook POST to ``L335Q_NOTIFY_URL``.

    settle(submission_ids)   # after a job ends or a submission is cancelled: send what has become due
    sweep()                  # the reaper's round: retries, and submissions whose last job a dead worker ended

The JSON (``message``) holds the submission's id, title, task, counts by state, duration, its distinct errors
(grouped by ``signature``: the last line with its numbers blanked) with their job ids, the web view's link
(``L335Q_WEB_URL`` + ``/submissions/ID``) and a ``text`` line, which is all a Slack-style hook reads.

**Once.** Any number of workers may call ``settle`` at the same moment: each first *claims* the submission
with one conditional UPDATE (its jobs all final, and its notification not yet claimed, or due a retry), and only
the one whose UPDATE changed the row sends. A sender that dies while sending leaves a claim that expires after
``CLAIM_S``; the reaper sends again with the same ``Idempotency-Key`` header (the submission and the end of its
last job), so a receiver that honours it sees one message. **Retried**: an endpoint that is down or answers an
error is tried again after 10, 20, 40 ... s (``L335Q_NOTIFY_RETRY_S``, at most an hour apart), up to
``L335Q_NOTIFY_ATTEMPTS`` (10) tries, then ``failed`` with the reason. ``l335q retry`` of a submission clears
its notification: the next end sends a new one. Every time is the database's clock (``db_now``).
"""
from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from datetime import timedelta

from sqlalchemy import and_, exists, func, or_, select, update

from .config import notify_attempts, notify_retry_seconds, notify_url, web_url
from .db import FINAL_STATES, Job, Submission, db_now, session_scope
from .status import last_line

log = logging.getLogger(__name__)

CLAIM_S = 120.0            # a claim older than this is a sender that died: the reaper sends again
SWEEP_S = 600.0            # the reaper notifies ended submissions nobody notified whose last job ended this recently
TIMEOUT_S = 10.0           # one POST


def signature(error: str | None) -> str:
    """What groups errors: the last line, numbers blanked ("stalled # s at step # of # on HOST")."""
    return re.sub(r"\d[\d,.]*", "#", last_line(error)) or "failed"


def group_errors(rows) -> list[dict]:
    """[(job id, state, error, submission id)] -> [{"signature", "error" (the first job's line), "jobs",
    "submissions"}], most jobs first."""
    groups: dict[str, dict] = {}
    for job_id, state, error, sub_id in rows:
        line = last_line(error) or ("diverged: the loss became non-finite" if state == "diverged" else "failed")
        g = groups.setdefault(signature(line), {"signature": signature(line), "error": line, "jobs": [],
                                                "submissions": []})
        g["jobs"].append(job_id)
        if sub_id not in g["submissions"]:
            g["submissions"].append(sub_id)
    return sorted(groups.values(), key=lambda g: -len(g["jobs"]))


def _failed_rows(s, *where):
    return s.execute(select(Job.id, Job.state, Job.error, Job.submission_id).where(
        Job.state.in_(("failed", "diverged")), *where).order_by(Job.id)).all()


def _ended():
    """SQL: the submission has jobs and all of them are final."""
    unfinished = exists().where(Job.submission_id == Submission.id, Job.state.not_in(FINAL_STATES))
    return and_(exists().where(Job.submission_id == Submission.id), ~unfinished)


def _due(now):
    return or_(Submission.notify_state.is_(None),
               and_(Submission.notify_state.in_(("retrying", "sending")), Submission.notify_at <= now))


def _claim(submission_id: int, url: str | None) -> bool:
    with session_scope(url) as s:
        now = db_now(s)
        claimed = s.execute(update(Submission).where(Submission.id == submission_id, _ended(), _due(now))
                            .values(notify_state="sending", notify_at=now + timedelta(seconds=CLAIM_S),
                                    notify_attempts=Submission.notify_attempts + 1)
                            .execution_options(synchronize_session=False)).rowcount
    return claimed == 1


def message(s, submission_id: int) -> dict:
    sub = s.get(Submission, submission_id)
    where = Job.submission_id == submission_id
    counts = dict(s.execute(select(Job.state, func.count()).where(where).group_by(Job.state)).all())
    finished = s.scalar(select(func.max(Job.finished_at)).where(where))
    errors = group_errors(_failed_rows(s, where))
    duration = (finished - sub.created_at).total_seconds() if finished else None
    state = "done" if set(counts) == {"done"} else "failed" if errors else "cancelled"
    link = f"{web_url().rstrip('/')}/submissions/{sub.id}" if web_url() else None
    states = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    text = (f"l335q submission {sub.id} ({sub.title or sub.task}) ended {state}: {states}"
            + (f" in {duration / 3600:.1f} h" if duration and duration >= 3600 else
               f" in {duration:.0f} s" if duration is not None else "")
            + "".join(f"; {len(g['jobs'])}x {g['error']}" for g in errors[:3]) + (f" {link}" if link else ""))
    return {"submission": sub.id, "title": sub.title, "task": sub.task, "state": state, "counts": counts,
            "jobs": sum(counts.values()), "created_at": sub.created_at.isoformat(timespec="seconds"),
            "finished_at": finished.isoformat(timespec="seconds") if finished else None,
            "duration_s": None if duration is None else round(duration, 1), "errors": errors, "url": link,
            "text": text, "idempotency_key": f"l335q-submission-{sub.id}-{finished.isoformat() if finished else ''}"}


def post(target: str, payload: dict, key: str) -> None:
    """One POST; raises with a one-line reason unless the endpoint answers 2xx. An opener of its own, so the
    proxies are the environment's now (``urlopen``'s global opener keeps those of its first call)."""
    req = urllib.request.Request(target, data=json.dumps(payload).encode(), method="POST", headers={
        "Content-Type": "application/json", "Idempotency-Key": key, "User-Agent": "l335q"})
    with urllib.request.build_opener().open(req, timeout=TIMEOUT_S) as r:
        r.read(4096)


def _send(submission_id: int, url: str | None) -> bool:
    with session_scope(url) as s:
        payload = message(s, submission_id)
    error = None
    try:
        post(notify_url(), payload, payload["idempotency_key"])
    except urllib.error.HTTPError as exc:
        error = f"HTTP {exc.code} {exc.reason}"
    except Exception as exc:           # refused, timed out, DNS: one line, tried again later
        error = (str(getattr(exc, "reason", exc)) or type(exc).__name__).splitlines()[0]
    with session_scope(url) as s:
        now, sub = db_now(s), s.get(Submission, submission_id, with_for_update=True)
        if sub is None or sub.notify_state != "sending":
            return False                # cleared meanwhile (a retry of the submission)
        if error is None:
            sub.notify_state, sub.notified_at, sub.notify_error = "sent", now, None
        else:
            n = sub.notify_attempts
            sub.notify_state = "failed" if n >= notify_attempts() else "retrying"
            sub.notify_at = now + timedelta(seconds=min(notify_retry_seconds() * 2 ** (n - 1), 3600.0))
            sub.notify_error = error
            log.warning("submission %d: notification try %d failed: %s", submission_id, n, error)
    return error is None


def settle(submission_ids, url: str | None = None) -> list[int]:
    """Send the notification of each of these submissions that has ended and is due one; the ids sent."""
    if not notify_url():
        return []
    return [i for i in sorted(set(submission_ids)) if _claim(i, url) and _send(i, url)]


def sweep(url: str | None = None) -> list[int]:
    """The reaper's round: retries that are due, expired claims, and ended submissions nobody notified whose last
    job ended in the last ``SWEEP_S`` (a worker that died between its job's end and the send). Older ones (ended
    while no URL was set) stay unsent: setting ``L335Q_NOTIFY_URL`` does not replay the past days."""
    if not notify_url():
        return []
    with session_scope(url) as s:
        now = db_now(s)
        just_ended = exists().where(Job.submission_id == Submission.id,
                                    Job.finished_at > now - timedelta(seconds=SWEEP_S))
        recent = and_(Submission.notify_state.is_(None), just_ended)
        ids = list(s.scalars(select(Submission.id).where(or_(recent, Submission.notify_state.in_(
            ("retrying", "sending"))), _ended(), _due(now))))
    return settle(ids, url)


def settle_jobs(job_ids, url: str | None = None) -> list[int]:
    """``settle`` the submissions of these jobs (a worker's, after it ran them)."""
    if not notify_url() or not job_ids:
        return []
    with session_scope(url) as s:
        subs = s.scalars(select(Job.submission_id).where(Job.id.in_(list(job_ids))).distinct()).all()
    return settle(subs, url)


def digest(s, since: timedelta) -> dict:
    """The night in one dict (``l335q report --since 12h``): every submission created in the period or with a job
    that ended in it, their counts, durations and notifications, and all their failures grouped by signature."""
    now = db_now(s)
    start = now - since
    ended = exists().where(Job.submission_id == Submission.id, Job.finished_at >= start)
    subs = s.scalars(select(Submission).where(or_(Submission.created_at >= start, ended)).order_by(Submission.id)).all()
    ids = [sub.id for sub in subs]
    counts: dict[int, dict] = {i: {} for i in ids}
    spans = {}
    for sub_id, state, n, last in s.execute(select(Job.submission_id, Job.state, func.count(), func.max(
            Job.finished_at)).where(Job.submission_id.in_(ids)).group_by(Job.submission_id, Job.state)):
        counts[sub_id][state] = n
        if last is not None:
            spans[sub_id] = max(spans.get(sub_id, last), last)
    rows = [{"submission": sub.id, "task": sub.task, "title": sub.title, "counts": counts[sub.id],
             "created_at": sub.created_at.isoformat(timespec="seconds"),
             "ended": all(k in FINAL_STATES for k in counts[sub.id]) and bool(counts[sub.id]),
             "duration_s": round((spans[sub.id] - sub.created_at).total_seconds(), 1) if sub.id in spans else None,
             "notification": sub.notify_state} for sub in subs]
    total: dict[str, int] = {}
    for c in counts.values():
        for k, n in c.items():
            total[k] = total.get(k, 0) + n
    return {"since": start.isoformat(timespec="seconds"), "until": now.isoformat(timespec="seconds"),
            "submissions": rows, "counts": total, "errors": group_errors(_failed_rows(s, Job.submission_id.in_(ids)))}


def digest_text(d: dict) -> str:
    def states(c: dict) -> str:
        return ", ".join(f"{n:,} {k}" for k, n in sorted(c.items())) or "no jobs"

    def span(sec) -> str:
        return "" if sec is None else f"{sec / 3600:.1f} h" if sec >= 3600 else f"{sec / 60:.1f} min" if sec >= 60 \
            else f"{sec:.0f} s"

    subs = d["submissions"]
    out = [f"l335q from {d['since']} to {d['until']} UTC: {len(subs)} submission{'s' * (len(subs) != 1)}, "
           f"{sum(d['counts'].values()):,} jobs: {states(d['counts'])}"]
    for r in subs:
        out.append(f"{r['submission']:>6}  {r['task']:<12} {states(r['counts'])}"
                   + ("" if r["ended"] else " (still running)") + (f", {span(r['duration_s'])}" if r["ended"] else "")
                   + (f", notification {r['notification']}" if r["notification"] else "")
                   + (f"  {r['title']}" if r["title"] else ""))
    if d["errors"]:
        failed = sum(len(g["jobs"]) for g in d["errors"])
        out.append(f"failures by error ({failed:,} jobs, {len(d['errors'])} distinct):")
        for g in d["errors"]:
            jobs = ", ".join(map(str, g["jobs"][:8])) + (" ..." if len(g["jobs"]) > 8 else "")
            out.append(f"  {len(g['jobs']):>5} x {g['error']}")
            out.append(f"          jobs {jobs}; submissions {', '.join(map(str, g['submissions']))}")
    else:
        out.append("no failures")
    return "\n".join(out)
