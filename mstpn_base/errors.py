"""Exception types with messages meant for users (the CLI prints them on one line)."""


class MstpnError(Exception):
    """Base class: a problem the user can fix (bad input, missing backend, bad file)."""


class ParameterError(MstpnError, ValueError):
    """A parameter is NaN/inf or outside its physical range."""


class DataFormatError(MstpnError, ValueError):
    """An input file (CSV, JSON, checkpoint, network) is malformed, corrupted or of another version."""


class BackendUnavailableError(MstpnError, ImportError):
    """An optional simulator backend is not installed or cannot be imported."""


class FixedPointOverflowError(MstpnError, OverflowError):
    """A fixed-point value left its bit budget.  Every integer path (the device model, the
    converted network, their Lava models) raises this one type; the message and the attributes
    given as keywords name where (variable, step, device or node and index)."""

    def __init__(self, message: str, **where):
        super().__init__(message)
        self.where = where
        for key, value in where.items():
            setattr(self, key, value)
