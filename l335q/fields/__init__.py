"""Neural fields: coordinate encodings, batched coordinate MLPs with their initialisers, and THE fitting engine.

Many seeds of one configuration train as one batched model (weights (S, in, out), ``torch.bmm``):
``engine.fit_pixels`` / ``engine.fit_image`` are what every field task kind calls.
"""
from .engine import FieldConfig, FitResult, fit_image, fit_pixels, psnr, seed_psnr  # noqa: F401
