"""Exceptions of the pipeline: one base class, one subclass per cause.

The CLI maps every :class:`PipelineError` to exit code 2 and prints its message as one line.
"""


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class InputError(PipelineError):
    """An input raster (or manifest) cannot be used: missing, unreadable, no CRS, no overlap..."""


class ConfigError(PipelineError):
    """The configuration file is missing, malformed, or holds an unknown key or a bad value."""


class RegistrationError(PipelineError):
    """The residual shift between BEFORE and AFTER could not be estimated reliably."""


class OutputError(PipelineError):
    """The output folder cannot be created or written."""
