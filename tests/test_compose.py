"""Containers: the compose wiring (parsed), and each compose service's command run natively.

There is no Docker engine here, so the compose file is read as YAML and its wiring checked; then the
`migrate`, `worker` and `api` services' own commands (the image's entrypoint `l335q` + the service's
`command`, the service's environment interpolated the way compose does) run as local processes with the
URLs pointed at this machine's PostgreSQL and Redis instead of the `postgres` and `redis` containers.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
import yaml
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from conftest import REDIS, ROOT, fresh_pg_database, l335q_cmd

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def interpolate(text: str, env: dict) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$, nesting."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if text.startswith("${", j):
                    depth, j = depth + 1, j + 2
                else:
                    depth, j = depth - (text[j] == "}"), j + 1
            body = text[i + 2:j - 1]
            m = re.fullmatch(r"(\w+)(?:(:?)([-?])(.*))?", body, re.S)
            name, colon, op, arg = m.groups()
            value = env.get(name)
            unset = value is None or (colon and value == "")
            if op == "-" and unset:
                value = interpolate(arg, env)
            elif op == "?" and unset:
                raise KeyError(f"{name}: {arg}")
            out.append(value or "")
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def service_env(name: str, env: dict) -> dict:
    return {k: interpolate(str(v), env) for k, v in SERVICES[name].get("environment", {}).items()}


def service_argv(name: str, env: dict) -> list[str]:
    entry = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", DOCKERFILE, re.M).group(1))
    assert entry == ["l335q"]
    return [interpolate(a, env) for a in SERVICES[name]["command"]]


# ----------------------------------------------------------------------------- wiring

def test_interpolation_follows_compose_rules():
    env = {"A": "a", "EMPTY": ""}
    assert interpolate("${A}-${B:-b}-${EMPTY:-e}-${EMPTY-e}-$$HOME", env) == "a-b-e--$HOME"
    assert interpolate("${X:-p://u:${PW:-pw}@h/d}", env) == "p://u:pw@h/d"
    with pytest.raises(KeyError):
        interpolate("${B:?must be set}", env)


def test_services_and_their_order():
    assert {"redis", "postgres", "migrate", "worker", "api"} <= set(SERVICES)
    assert SERVICES["migrate"]["command"] == ["db", "upgrade"]
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["migrate"].get("restart") in ("no", None)          # one-shot
    for name in ("worker", "api"):
        deps = SERVICES[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    for name in ("redis", "postgres", "worker", "api"):
        test = SERVICES[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


def test_worker_reserves_a_gpu():
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_one_image_for_migrate_worker_api():
    images = {SERVICES[n]["image"] for n in ("migrate", "worker", "api")}
    assert len(images) == 1
    assert all(SERVICES[n].get("build") == "." for n in ("migrate", "worker", "api"))


def test_urls_come_from_the_environment_and_default_to_the_services():
    for name in ("migrate", "worker", "api"):
        raw = SERVICES[name]["environment"]
        assert raw["L335Q_DATABASE_URL"].startswith("${L335Q_DATABASE_URL:-")
        assert raw["L335Q_BROKER_URL"].startswith("${L335Q_BROKER_URL:-")
        env = service_env(name, {})
        db = make_url(env["L335Q_DATABASE_URL"])
        assert (db.get_backend_name(), db.host, db.database) == ("postgresql", "postgres", "l335q")
        assert env["L335Q_BROKER_URL"] == "redis://redis:6379/0"
        assert env["L335Q_DATA"] == "/data"
        given = service_env(name, {"L335Q_DATABASE_URL": "postgresql://x@db/y", "L335Q_BROKER_URL": "redis://q/1"})
        assert (given["L335Q_DATABASE_URL"], given["L335Q_BROKER_URL"]) == ("postgresql://x@db/y", "redis://q/1")
    pg = SERVICES["postgres"]["environment"]
    assert pg["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")   # no secret typed into the file
    assert SERVICES["api"]["environment"]["L335Q_API_TOKEN"].startswith("${L335Q_API_TOKEN")


def test_dockerfile_python_base_pinned_torch_non_root_entrypoint():
    """A plain Python base: PyTorch's pip wheels bring CUDA and cuDNN, at requirements-torch.txt's pin
    (tests/test_torch_pin.py checks the pin everywhere; containers/smoke.sh builds and runs the image)."""
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", DOCKERFILE, re.M).group(1)
    assert re.fullmatch(r"python:3\.1[1-9][\w.-]*", base), base           # tomllib: Python 3.11+
    assert re.search(r"^RUN .*pip install -r requirements-torch\.txt", DOCKERFILE, re.M)
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"useradd .*\b{users[-1]}\b", DOCKERFILE)
    assert re.search(r"^ENV[^\n]*(\\\n[^\n]*)*L335Q_DATA=/data", DOCKERFILE, re.M)
    assert re.search(r'^VOLUME \["/data"\]', DOCKERFILE, re.M)
    for folder in ("l335q", "worker", "api", "cli", "migrations"):   # everything the package maps in
        assert re.search(rf"^COPY {folder} ", DOCKERFILE, re.M), folder
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"l335q", "worker", "api", "cli", "migrations", "pyproject.toml"} & set(ignored)


# ----------------------------------------------------------------------------- native runs

@pytest.fixture(scope="module")
def local_env():
    """The compose variables pointed at this machine: a fresh PostgreSQL database, Redis, an own queue."""
    with fresh_pg_database("l335q_compose") as url:
        yield {"L335Q_DATABASE_URL": url, "L335Q_BROKER_URL": f"{REDIS}/0",
               "L335Q_QUEUE": f"l335q-compose-{uuid.uuid4().hex[:8]}"}


def run_service(name: str, env: dict, tmp_path, **popen) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "l335q.cli.main", *service_argv(name, env)],
                            env={**os.environ, **service_env(name, env), "PYTHONUNBUFFERED": "1"},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_migrate_service_creates_the_tables(local_env, tmp_path):
    proc = run_service("migrate", local_env, tmp_path)
    assert proc.wait(timeout=120) == 0, (tmp_path / "migrate.log").read_text()
    from l335q.db import get_engine
    tables = set(inspect(get_engine(local_env["L335Q_DATABASE_URL"])).get_table_names())
    assert {"submissions", "jobs", "metrics", "artifacts", "alembic_version"} <= tables


def test_worker_service_consumes_a_job(local_env, tmp_path, one_cpu_thread):
    """The worker command (with the compose environment) runs a real job submitted on its queue."""
    assert l335q_cmd("db", "upgrade", env=local_env).returncode == 0
    assert "--queues" in SERVICES["worker"]["command"]
    worker = run_service("worker", {**local_env}, tmp_path)
    spec = tmp_path / "tiny.yaml"
    spec.write_text("task: cls-compare\nseeds: [0]\nepochs: 1\ntrain_subset: 500\ntest_subset: 500\nbatch_size: 100\ndevice: cpu\n")
    try:
        env = service_env("worker", local_env)
        sub = l335q_cmd("submit", spec, "--queue", local_env["L335Q_QUEUE"], "--wait", env=env, timeout=240)
        assert sub.returncode == 0, sub.stderr + (tmp_path / "worker.log").read_text()
        sub_id = int(sub.stdout.split()[0])
        status = l335q_cmd("status", sub_id, env=env, check=True).stdout
        assert re.search(rf"^\s*{sub_id}\s+cls-compare\s+1 jobs: 1 done", status, re.M), status
        health = SERVICES["worker"]["healthcheck"]["test"]       # the container's own health probe
        probe = interpolate(health[1], {})
        assert health[0] == "CMD-SHELL" and probe.startswith("celery "), health
        probe = f"{shlex.quote(sys.executable)} -m {probe}"        # run by a shell, as the container's is
        ping = subprocess.run(["sh", "-c", probe], env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=60)
        assert ping.returncode == 0 and "pong" in ping.stdout.lower(), ping.stdout + ping.stderr
    finally:
        stop(worker)
    assert worker.returncode is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never through an http_proxy from the env


def test_api_service_answers_health(local_env, tmp_path):
    assert l335q_cmd("db", "upgrade", env=local_env).returncode == 0
    port = free_port()
    argv = service_argv("api", local_env)
    argv[argv.index("--port") + 1] = str(port)          # the container's port, on a free local one
    argv[argv.index("--host") + 1] = "127.0.0.1"
    log = open(tmp_path / "api.log", "w")
    api = subprocess.Popen([sys.executable, "-m", "l335q.cli.main", *argv],
                           env={**os.environ, **service_env("api", local_env), "PYTHONUNBUFFERED": "1"},
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.monotonic() + 60, None
        while time.monotonic() < deadline and api.poll() is None:
            try:
                with DIRECT.open(f"http://127.0.0.1:{port}/health", timeout=3) as r:
                    body = json.load(r)
                break
            except OSError:
                time.sleep(0.3)
        assert body is not None, (tmp_path / "api.log").read_text()
        assert body == {"status": "ok", "version": body["version"], "mode": "service"}
    finally:
        stop(api)
