"""Response bodies of the HTTP API (pydantic models: they document the OpenAPI schema)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="one line saying what was wrong")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str | None = None
    mode: Literal["service", "embedded"] | None = None
    error: str | None = None


class Submitted(BaseModel):
    id: int
    task: str
    jobs: int = Field(description="how many jobs the spec expanded into")
    mode: Literal["service", "embedded"]
    queue: str | None = Field(None, description="the Celery queue the jobs were published on (service mode)")
    note: str | None = None


class Planned(BaseModel):
    """What a spec would run (``dry_run=true``): nothing is written."""
    jobs: int
    seeds: int
    reused: int = Field(description="seeds an earlier submission already measured (l335q.reuse)")
    to_run: int = Field(description="seeds that would be computed")
    jobs_to_run: int
    estimated_seconds: float | None = Field(description="work time from comparable finished jobs; null: none ran")
    per_workers: dict[str, float] = Field(description="wall time on 1, 2, 4 and 8 workers")
    unestimated_jobs: int
    basis: str


class RunningJob(BaseModel):
    job: int
    worker: str | None = None
    done: float | None = Field(None, description="the job's own progress: epochs or steps done ...")
    total: float | None = Field(None, description="... of this many")
    unit: str | None = None
    elapsed_s: float | None = None
    lease_age_s: float | None = Field(None, description="seconds since the job's worker last renewed its lease")


class SubmissionSummary(BaseModel):
    id: int
    task: str
    title: str | None = None
    created_at: str
    jobs: int
    counts: dict[str, int] = Field(description="jobs by state (queued, running, done, failed, diverged, cancelled)")
    finished: bool = Field(description="every job is in a final state")
    eta_s: float | None = Field(None, description="seconds until every job is final, from finished jobs' durations")
    running: list[RunningJob] = []


class JobState(BaseModel):
    id: int
    state: str
    attempts: int
    seconds: float | None = None
    worker: str | None = None
    params: dict[str, Any] = Field(description="the job's parameters (stored files by name)")
    error: str | None = Field(None, description="the last line of a failed job's error")


class SubmissionStatus(SubmissionSummary):
    spec: dict[str, Any] = Field(description="the normalised spec (stored files by name)")
    job_states: list[JobState]


class ArtifactInfo(BaseModel):
    id: int
    job_id: int | None = None
    name: str
    media_type: str
    size: int
    sha256: str
    seed: int | None = None


class ResultsTable(BaseModel):
    task: str
    submission: int | None = None
    rows: list[dict[str, Any]] = Field(description="the same rows as `l335q results --format json`")
    summary: list[str] | None = Field(None, description="sentences computed from the rows")
    notes: list[str] | None = None


class Cancelled(BaseModel):
    id: int
    cancelled: int = Field(description="queued jobs now cancelled")
    counts: dict[str, int]


class Retried(BaseModel):
    id: int
    jobs: list[int] = Field(description="the jobs queued again")
    mode: Literal["service", "embedded"]
