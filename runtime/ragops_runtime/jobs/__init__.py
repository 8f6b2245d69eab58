"""Asynchronous and batch queries: a job queue in PostgreSQL, worked by the runtime replicas.

`api` is the HTTP face (POST /v1/jobs, GET /v1/jobs/{id}), `worker` claims and answers items,
`policy` says which failures are retried and when; the SQL is in `store.jobs`.
"""

from .api import job_request_model, jobs_router
from .worker import JobConfig, JobWorker

__all__ = ["JobConfig", "JobWorker", "job_request_model", "jobs_router"]
