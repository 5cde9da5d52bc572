"""`l335q report`: one self-contained HTML file, opened from disk in a real headless Chromium with the network off;
file names instead of hashes everywhere; the compare section of several submissions.

One small batch (a cls-compare job and two inr-init submissions on two different files both named dusk.png) runs
once into a PostgreSQL database of this module; every test reads it back.
"""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from PIL import Image

from browser import chromium, images_loaded, same_rows, table_rows, watch_console
from conftest import fresh_pg_database, l335q_cmd

TINY_CLS = {"task": "cls-compare", "title": "report test", "seeds": [0], "epochs": 1, "train_subset": 500,
            "test_subset": 500, "batch_size": 100, "device": "cpu"}
TINY_INR = {"task": "inr-init", "image": ["photos/dusk.png", "other/dusk.png"], "resolution": 16, "steps": 20,
            "width": 32, "seeds": [0, 1], "initialiser": ["default", "xavier-normal"], "device": "cpu"}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """{"url", "cls", "inr", "inr2", "files"}: the submissions' ids in a fresh PostgreSQL database, all jobs done."""
    import torch

    from l335q import service
    from l335q.db import upgrade
    from l335q.runner import execute_job

    folder = tmp_path_factory.mktemp("spec")
    files = {}
    for sub, seed in (("photos", 1), ("other", 2)):
        (folder / sub).mkdir()
        rgb = np.random.default_rng(seed).integers(0, 256, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / sub / "dusk.png")
        files[f"{sub}/dusk.png"] = (folder / sub / "dusk.png").read_bytes()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with fresh_pg_database("l335q_report") as url:
            upgrade(url)
            run = lambda ids: [execute_job(i, url=url) for i in ids]          # noqa: E731
            ids = {name: service.submit(raw, folder, url=url, run_here=run).id
                   for name, raw in (("cls", TINY_CLS), ("inr", TINY_INR), ("inr2", {**TINY_INR, "steps": 30}))}
            yield {"url": url, "files": files, **ids}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def db(batch, monkeypatch):
    monkeypatch.setenv("L335Q_DATABASE_URL", batch["url"])
    import l335q.db
    l335q.db._ready.clear()
    return batch


def results_json(task, sub_id) -> dict:
    """What `l335q results --task TASK --submission ID --format json` prints (the same calls, in this process)."""
    from l335q.db import session_scope
    from l335q.results import load, render
    from l335q.tasks import get_kind

    with session_scope() as s:
        return json.loads(render(get_kind(task).results(load(s, sub_id, task)), "json"))


def cli_report(db, tmp_path, *ids) -> tuple[str, str]:
    """`l335q report IDS --out FILE` as a user runs it: (the file's path, its text)."""
    out = tmp_path / "report.html"
    proc = l335q_cmd("report", *ids, "--out", out, env={"L335Q_DATABASE_URL": db["url"]}, check=True)
    assert proc.stdout.strip() == str(out)
    return str(out), out.read_text()


def report(tmp_path, *ids) -> tuple[str, str]:
    """The same file as `l335q report` writes, made in this process."""
    from l335q.db import session_scope
    from l335q.report import report_html

    with session_scope() as s:
        html = report_html(s, list(ids), static=True)
    (tmp_path / "report.html").write_text(html)
    return str(tmp_path / "report.html"), html


def open_offline(browser, path: str):
    """A page of ``path`` (file://) in a context with the network off; every request other than the file itself is
    recorded (and refused)."""
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    requests: list[str] = []

    def route(r):
        if r.request.url != f"file://{path}":
            requests.append(r.request.url)
            return r.abort()
        return r.continue_()

    context.route("**/*", route)
    page = context.new_page()
    errors = watch_console(page)
    page.goto(f"file://{path}", wait_until="load")
    return page, errors, requests


def test_stored_files_show_by_name_everywhere(db, tmp_path):
    """Two different files named dusk.png: `dusk.png` and `dusk.png (2)` in the table, summary, API and report;
    the hash stays the key in the database."""
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from l335q.api.app import app
    from l335q.db import Job, session_scope
    from l335q.report import plot_png

    table = results_json("inr-init", db["inr"])
    assert {r["image"] for r in table["rows"]} == {"dusk.png", "dusk.png (2)"}
    assert any("dusk.png (2)" in s for s in table["summary"]) and "upload:" not in json.dumps(table)
    with TestClient(app) as client:
        status = client.get(f"/submissions/{db['inr']}").json()
    assert status["spec"]["image"] == ["dusk.png", "dusk.png (2)"]
    assert {j["params"]["image"] for j in status["job_states"]} == {"dusk.png", "dusk.png (2)"}
    with session_scope() as s:            # underneath: the hash of the file that name stands for
        stored = {json.dumps(j.params["image"]) for j in s.scalars(select(Job).where(Job.submission_id == db["inr"]))}
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in db["files"].items()}
    assert stored == {json.dumps("upload:" + sha["photos/dusk.png"]), json.dumps("upload:" + sha["other/dusk.png"])}
    assert status["job_states"][0]["params"]["image"] == "dusk.png"        # the spec's first file keeps the name
    _, html = report(tmp_path, db["inr"])
    assert "upload:" not in html and "dusk.png (2)" in html
    with session_scope() as s:                     # the figure draws the target from the stored bytes
        assert plot_png(s, "inr-init", db["inr"]).startswith(b"\x89PNG")


def test_static_report_opened_from_disk_offline(db, tmp_path):
    """The report file alone, in Chromium with no network: the table is the JSON results, every image decodes,
    no console error, nothing requested; a click on a heading sorts the rows."""
    from sqlalchemy import func, select

    from l335q.db import Artifact, session_scope

    path, html = cli_report(db, tmp_path, db["cls"])
    refs = re.findall(r'(?:src|href|action)="([^"]*)"', html)
    assert refs and all(r.startswith("data:") for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    expected = results_json("cls-compare", db["cls"])
    with chromium() as browser:
        page, errors, requests = open_offline(browser, path)
        columns, rows = table_rows(page, f"#submission-{db['cls']} table.results")
        assert same_rows(rows, expected["rows"]) and len(rows) == 2
        summary = page.eval_on_selector_all(f"#submission-{db['cls']} ul.summary li", "lis => lis.map(l => l.textContent)")
        assert summary == expected["summary"]
        imgs = images_loaded(page)
        with session_scope() as s:
            pngs = s.scalar(select(func.count()).where(Artifact.submission_id == db["cls"],
                                                       Artifact.media_type == "image/png"))
        assert len(imgs) == pngs + 1 and pngs >= 3             # the stored images and the figure
        assert all(i["w"] > 0 and i["src"].startswith("data:image/png;base64,") for i in imgs), imgs
        jobs = page.eval_on_selector_all("table.jobs tbody tr", "trs => trs.map(t => t.dataset.state)")
        assert jobs == ["done"]
        page.click(f"#submission-{db['cls']} table.results th[data-column=test_acc_mean]")
        _, once = table_rows(page, f"#submission-{db['cls']} table.results")
        page.click(f"#submission-{db['cls']} table.results th[data-column=test_acc_mean]")
        _, twice = table_rows(page, f"#submission-{db['cls']} table.results")
        acc = [r["test_acc_mean"] for r in once]
        assert acc == sorted(acc) and [r["test_acc_mean"] for r in twice] == sorted(acc, reverse=True)
        page.screenshot(path=str(tmp_path / "report-static.png"), full_page=True)
        assert errors == [] and requests == []
    assert (tmp_path / "report-static.png").stat().st_size > 10_000


def test_compare_lines_up_rows_and_shows_only_differing_keys(db, tmp_path):
    path, _ = report(tmp_path, db["inr"], db["inr2"])
    first, second = (results_json("inr-init", i) for i in (db["inr"], db["inr2"]))
    with chromium() as browser:
        page, errors, requests = open_offline(browser, path)
        keys = page.eval_on_selector_all("#compare table.spec-diff tbody tr td:first-child", "t => t.map(x => x.textContent)")
        assert keys == ["steps"]                 # images, seeds, initialisers ... are the same: not shown
        _, specs = table_rows(page, "#compare table.spec-diff")
        assert list(specs[0].values()) == ["steps", 20, 30]
        columns, rows = table_rows(page, "#compare table.compare")
        assert columns[0] == "submission"
        assert same_rows(rows, [{"submission": db["inr"], **r} for r in first["rows"]]
                         + [{"submission": db["inr2"], **r} for r in second["rows"]])
        assert page.locator("section.submission").count() == 2
        assert all(i["w"] > 0 for i in images_loaded(page))
        assert errors == [] and requests == []


def test_report_errors_exit_2_and_write_nothing(db, tmp_path):
    env = {"L335Q_DATABASE_URL": db["url"]}
    out = tmp_path / "r.html"
    for args, message in [((987654,), "error: no submission with id 987654"),
                          ((db["cls"], "--out", tmp_path / "absent" / "r.html"), "error: --out: folder")]:
        proc = l335q_cmd("report", *args, *(() if "--out" in args else ("--out", out)), env=env)
        assert proc.returncode == 2 and proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []
