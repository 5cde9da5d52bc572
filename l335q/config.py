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


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        from . import UserError
        raise UserError(f"{name}={value!r} is not a number of seconds") from None


def lease_seconds() -> float:
    """``L335Q_LEASE_S``: a running job renews its lease this often × 3; a job whose lease is this old has lost
    its worker and is re-queued by the reaper (default 30 s)."""
    return _seconds("L335Q_LEASE_S", 30.0)


def reap_seconds() -> float:
    """``L335Q_REAP_S``: how often each worker runs the reaper (default: one lease)."""
    return _seconds("L335Q_REAP_S", lease_seconds())


def queued_grace_seconds() -> float:
    """``L335Q_QUEUED_GRACE_S``: a queued job unclaimed this long whose message is gone is published again."""
    return _seconds("L335Q_QUEUED_GRACE_S", 60.0)


def checkpoint_seconds() -> float:
    """``L335Q_CHECKPOINT_S``: a long job saves a checkpoint at most this often (0: at every chance)."""
    return _seconds("L335Q_CHECKPOINT_S", 60.0)


def max_attempts() -> int:
    """``L335Q_MAX_ATTEMPTS``: worker losses a job survives unless its spec says ``max_attempts`` (default 3)."""
    return max(1, int(_seconds("L335Q_MAX_ATTEMPTS", 3)))


def stall_seconds() -> float:
    """``L335Q_STALL_S``: a running job that gives no sign of progress for this long, and for ``STALL_FACTOR`` x
    the longest time its steps have taken so far, is stalled: its worker's pool process is killed and the job
    resumes elsewhere (default 600 s)."""
    return _seconds("L335Q_STALL_S", 600.0)


STALL_FACTOR = 10.0
STARTUP_STALL_S = 120.0       # before its first sign of life a job is stalled only after this long too


def time_limit_seconds() -> float | None:
    """``L335Q_TIME_LIMIT_S``: the run time of a job whose spec sets no ``time_limit`` (default: none). Past it the
    job saves its checkpoint and ends ``failed``; ``l335q retry`` resumes it."""
    value = _seconds("L335Q_TIME_LIMIT_S", 0.0)
    return value if value > 0 else None


def pack_max() -> int:
    """``L335Q_PACK_MAX``: a worker runs up to this many queued jobs of one shape as one batched run (task kinds
    with ``run_packed``; see ``l335q.packing``). Default 16; 1 turns packing off."""
    return max(1, int(_seconds("L335Q_PACK_MAX", 16)))


FAST_MODES = {"auto": "auto", "on": "on", "1": "on", "true": "on", "off": "off", "0": "off", "false": "off"}


def fast_mode() -> str:
    """``L335Q_FAST``: the training engines' fast paths (classification: the fused loop; fields: full-batch
    steps; both as CUDA graphs). ``auto``: on CUDA devices, the plain loops elsewhere; ``1``/``on``/``true``: also
    off CUDA, the same code run eagerly (slower than the plain loops on a CPU; what tests use);
    ``0``/``off``/``false``: never. Default ``off``: the CUDA graph paths have not run on a GPU yet
    (``bench/gpu.py`` is the check; once it has passed on a card, ``auto`` is meant to become the default).
    Returns "auto", "on" or "off"."""
    value = (os.environ.get("L335Q_FAST") or "off").strip().lower()
    if value not in FAST_MODES:
        from . import UserError
        raise UserError(f"L335Q_FAST={value!r}: expected auto, 1/on/true or 0/off/false")
    return FAST_MODES[value]


def fast_applies(mode: str, device) -> bool:
    """THE rule of both engines: a fast ``mode`` ("auto", "on", "off") takes its path on ``device`` (a name or a
    ``torch.device``): "on" everywhere, "auto" on CUDA only, "off" never. Other modes raise ValueError."""
    if mode not in FAST_MODES.values():
        raise ValueError(f"fast mode {mode!r}: expected auto, on or off")
    return mode == "on" or (mode == "auto" and str(device).startswith("cuda"))


def notify_url() -> str | None:
    """``L335Q_NOTIFY_URL``: a webhook that gets one JSON POST when a submission's last job ends
    (``l335q.notify``); unset: no notifications."""
    return os.environ.get("L335Q_NOTIFY_URL") or None


def web_url() -> str | None:
    """``L335Q_WEB_URL``: the web view's address as its users reach it (``http://gpu-box:8000``), for links in
    notifications."""
    return os.environ.get("L335Q_WEB_URL") or None


def notify_attempts() -> int:
    """``L335Q_NOTIFY_ATTEMPTS``: tries of one notification before it is given up (default 10)."""
    return max(1, int(_seconds("L335Q_NOTIFY_ATTEMPTS", 10)))


def notify_retry_seconds() -> float:
    """``L335Q_NOTIFY_RETRY_S``: the wait after a notification's first failed try, doubled after each (default 10)."""
    return _seconds("L335Q_NOTIFY_RETRY_S", 10.0)
