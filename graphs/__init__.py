"""The pipelines users submit; each module has ``build(cfg) -> dict[str, Delayed]``."""
