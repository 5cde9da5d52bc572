"""The classifier names a spec may choose from, kept free of torch so that building a task's spec schema
(``l335q submit``, ``status``, ``results``) does not import it; ``models.build_model`` builds each."""
from __future__ import annotations

MODELS = ("fcn", "cnn")
