"""The names a field-fit spec may choose from, kept free of torch so that building a task's spec schema
(``l335q submit``, ``status``, ``results``) does not import it. The modules that implement each choice
(encodings, models, engine, upsampling) import their tuple from here."""
from __future__ import annotations

ENCODINGS = ("none", "basic", "posenc", "gaussian")
INITIALISERS = ("default", "kaiming-normal", "kaiming-uniform", "xavier-normal", "xavier-uniform", "siren",
                "mean-colour")
ACTIVATIONS = ("relu", "sine")
OUTPUTS = ("sigmoid", "relu")
LOSSES = ("mse", "l1", "huber")
PRECISIONS = ("fp32", "bf16")   # the training forward's: fp32, or bfloat16 autocast (parameters stay fp32)
BASELINES = ("bicubic", "bilinear", "nearest")   # the classic interpolations beside a field's upsampling
METHODS = ("inr",) + BASELINES
