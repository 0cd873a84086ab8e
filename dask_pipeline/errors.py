"""Error classes: every expected failure is one of these, with a one-line message."""


class DaskPipelineError(Exception):
    """Base of every error the CLI reports as one line (anything else is a bug)."""


class ConfigError(DaskPipelineError):
    """A config file, preset, profile or override is invalid; the message names the dotted key."""


class DataError(DaskPipelineError):
    """Market data is missing or malformed; the message names the file, symbol and row."""


class ClusterError(DaskPipelineError):
    """A cluster cannot be started or reached, or its workers are unfit for the run."""


class ThresholdError(DaskPipelineError):
    """A finished run crossed a ``monitor`` threshold and ``monitor.fail_on_threshold`` is set."""


class ExtensionError(DaskPipelineError):
    """User code (a graph, plugin, indicator or estimator) broke its contract: a graph output
    of the wrong type, an indicator returning misaligned or infinite values, or one that
    looks ahead. The message names the extension."""


class OutputError(DaskPipelineError):
    """A run's results folder cannot be locked, written or read back as one complete run."""


class CheckpointError(DaskPipelineError):
    """A checkpoint cannot be written, cleared or trusted (damaged, truncated, or not this run's)."""
