"""l335q: a batch job service for the experiments of a vision-learning practical.

The core (this package minus ``worker``, ``api`` and ``cli``) knows nothing of Celery or HTTP:
specs expand into jobs (``specs``), jobs are rows in a SQL database (``db``), a job is run by
``runner.execute_job`` which calls the task kind's pure ``run`` function (``tasks/<kind>.py``).
"""
__version__ = "0.1.0"


class UserError(Exception):
    """A problem the user caused (bad spec, file, value, unreachable service).

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    """
