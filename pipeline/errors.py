"""Exceptions and warnings of the pipeline: one base class, one subclass per cause.

As rasterio's do (``RasterioIOError(RasterioError, OSError)``), each also inherits the builtin
a caller would catch without knowing our names. Each carries the file (``path``) or the
configuration key (``key``) it is about, so that the CLI and a batch's summary read them instead
of parsing messages. The CLI maps every :class:`PipelineError` to exit code 2 and prints its
message as one line.
"""
from __future__ import annotations

from pathlib import Path


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose.

    Parameters
    ----------
    message : str
        One line for a person: names the file or key and the reason.
    path : path, optional
        The file the error is about (an input raster, a manifest, a model, an output folder).
    key : str, optional
        The configuration key the error is about (``difference.threshold_sigma``).
    """

    def __init__(self, message: str = "", *, path: str | Path | None = None,
                 key: str | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.key = key

    def __reduce__(self):  # pickled with its fields (dask hands errors between processes)
        return _rebuild, (type(self), str(self), self.path, self.key)

    def line(self) -> str:
        """The one line a person reads: the message's first line, naming the file (``path``)
        even where the message does not."""
        text = str(self).splitlines()[0] if str(self) else type(self).__name__
        return f"{self.path}: {text}" if self.path and self.path not in text else text

    @property
    def reason(self) -> str:
        """The message without the leading ``path: `` it names, when it starts so."""
        text = str(self)
        prefix = f"{self.path}: " if self.path else None
        return text[len(prefix):] if prefix and text.startswith(prefix) else text


class InputError(PipelineError, ValueError):
    """An input raster (or manifest) cannot be used: missing, unreadable, no CRS, no overlap..."""


class UnreadableInputError(InputError, OSError):
    """An input file is missing or cannot be read (a VRT's source file included)."""


class ConfigError(PipelineError, ValueError):
    """The configuration file is missing, malformed, or holds an unknown key or a bad value."""


class RegistrationError(PipelineError, ValueError):
    """The residual shift between BEFORE and AFTER could not be estimated reliably."""


class OutputError(PipelineError, OSError):
    """The output folder cannot be created or written."""


def _rebuild(cls, message, path, key):
    return cls(message, path=path, key=key)


class PipelineWarning(UserWarning):
    """Base class of the warnings the pipeline issues on purpose."""


class UnregisteredWarning(PipelineWarning):
    """The pair goes on with the reprojection alone: the residual shift could not be measured
    reliably and ``allow_unregistered`` was given."""
