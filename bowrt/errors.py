"""One exception hierarchy for everything bowrt raises on purpose.

Every error a caller can provoke with bad input or a bad bundle derives from
:class:`BowrtError`; most also derive from the builtin that fits (``ValueError``,
``TypeError``, ``FileNotFoundError``) so generic handlers keep working.
"""

from __future__ import annotations


class BowrtError(Exception):
    """Base class of every error bowrt raises deliberately."""


# --- bundles -----------------------------------------------------------------
class BundleError(BowrtError, ValueError):
    """A bundle folder is unusable: missing, incomplete, tampered or unknown."""


class BundleMissingFileError(BundleError, FileNotFoundError):
    """A file the manifest names (or the manifest itself) is not there."""


class BundleChecksumError(BundleError):
    """A file's sha256 or size differs from the manifest: it was changed after export."""


class BundleFormatError(BundleError):
    """The manifest is unreadable, incomplete, or of a format version this bowrt does not know."""


class HostUnsupportedError(BundleError):
    """The bundle's int8 arithmetic is not exact on this host's CPU (its vectors would be wrong)."""


class NumericsError(BundleError):
    """The bundle's self-check failed on this host: its vectors differ from the reference vectors."""


class BundleSignatureError(BundleError):
    """Trusted keys were given and the bundle's ``manifest.sig`` does not prove it: no signature by a
    trusted key, one that does not match ``manifest.json`` (rewritten after signing), or a malformed file."""


class BundleUnsignedError(BundleSignatureError):
    """Trusted keys were given and the bundle has no ``manifest.sig`` at all."""


class MissingExtraError(BowrtError, ImportError):
    """An optional dependency (an extra) is not installed; the message is the ``pip install`` line."""


# --- export ------------------------------------------------------------------
class ExportError(BowrtError, RuntimeError):
    """The export stage could not produce a sound bundle."""


class ModelNotFoundError(ExportError, FileNotFoundError):
    """The source model could not be found locally or reached on the hub."""


class UnsupportedModelError(ExportError, ValueError):
    """The source is not a BERT-style encoder bowrt can export."""


class ParityGateError(ExportError):
    """A variant's numbers against PyTorch fell below its gate."""


class ExportOutputExistsError(ExportError, BundleError):
    """The export's output folder already exists and replacing it was not asked for."""


class UnsupportedGraphError(ExportError, ValueError):
    """The exported graph has a form the int8 rewrite cannot handle (an operator option,
    a missing input, an unexpected pattern, an opset too old)."""


# --- runtime -----------------------------------------------------------------
class InputError(BowrtError, ValueError):
    """An input item is unusable (wrong shape of pair/dict, too long before tokenizing, ...)."""


class InputTypeError(BowrtError, TypeError):
    """An input item has the wrong type (None, bytes, a number, ...)."""


class ProviderUnavailableError(BowrtError, RuntimeError):
    """An execution provider was asked for by name and is not available here."""


class Overloaded(BowrtError, RuntimeError):
    """The dynamic batcher's queue is full; retry later (HTTP 429)."""


class BatcherClosed(BowrtError, RuntimeError):
    """The dynamic batcher no longer accepts work (HTTP 503)."""


class OptionError(BowrtError, ValueError):
    """An unknown or invalid option; the message lists the valid ones."""


class SigningKeyError(OptionError):
    """A key given to keygen, sign or ``trusted_keys`` is missing, unreadable, not PEM, or not an
    Ed25519 key of the kind expected (private to sign, public to check): a bad option, not a bad bundle."""


# Export options: both an ExportError (the export failed) and an OptionError (bad option).
class ExportOptionError(ExportError, OptionError):
    """An export option is unknown or invalid (a variant, a text set); the message lists the valid ones."""


class GateSpecError(ExportOptionError):
    """A ``--gate`` override is not ``VARIANT.METRIC=VALUE`` with a known variant and metric."""


class Int8SettingsError(ExportOptionError):
    """An int8 setting (method, static tolerance, rounding, activation mode) is invalid."""


class BatchFailed(BowrtError, RuntimeError):
    """The encode function failed for a batch; every caller in that batch gets this, chained to the cause (HTTP 500)."""


class RequestTimeout(BowrtError, TimeoutError):
    """A request's deadline passed before its batch started, so it was dropped unencoded (HTTP 504)."""


# --- corpus jobs and serving -------------------------------------------------
class CorpusError(BowrtError, ValueError):
    """A corpus job cannot run: bad options, an unreadable input, or an output folder holding another job."""


class CorpusLineError(CorpusError):
    """A corpus line is unusable and ``on_error="stop"``; ``line`` is its 1-based line number."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line

    def __reduce__(self):  # keep ``line`` across pickling (Ray, multiprocessing)
        return (type(self), (str(self), self.line))


class EvalDataError(BowrtError, ValueError):
    """A labelled set for ``bowrt eval`` is unusable; the message names the file and the line."""


class RequestTooLarge(InputError):
    """A request exceeds the server's limits: too many inputs or too large a body (HTTP 413)."""


class ServerError(BowrtError, ConnectionError):
    """A bowrt server (the integrations' client) could not be reached, refused the key, or
    answered something unexpected."""
