"""Settings from the environment. Nothing else in l335q reads os.environ for these."""
from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "l335q"


def database_url() -> str:
    """``L335Q_DATABASE_URL``, else a SQLite file in the per-user data directory (embedded mode)."""
    url = os.environ.get("L335Q_DATABASE_URL")
    if url:
        return url
    path = data_home() / "l335q.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def broker_url() -> str | None:
    """``L335Q_BROKER_URL``; when unset, l335q runs in embedded mode (jobs run in-process)."""
    return os.environ.get("L335Q_BROKER_URL") or None


def device_override() -> str | None:
    """``L335Q_DEVICE`` (set by ``l335q worker --device``) replaces a job's ``device: auto``."""
    return os.environ.get("L335Q_DEVICE") or None


def redact(url: str) -> str:
    """A URL with its password replaced, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
