"""Neural fields: coordinate encodings, batched coordinate MLPs with their initialisers, and THE fitting engine.

Many seeds of one configuration train as one batched model (weights (S, in, out), ``torch.bmm``):
``engine.fit_pixels`` / ``engine.fit_image`` fit them; every field task kind calls ``fit_image`` through
``jobs.fit`` (the job's device, checkpoints and ``L335Q_FAST``).
"""
__all__ = ["FieldConfig", "FitResult", "fit_image", "fit_pixels", "psnr", "seed_psnr"]


def __getattr__(name: str):
    """The engine's names, imported on first use: ``import l335q.fields.names`` stays free of torch."""
    if name in __all__:
        from . import engine
        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
