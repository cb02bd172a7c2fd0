"""User-facing errors: bad input named by file/row/field/path. The CLI prints them as one line, no traceback."""


class CFTError(ValueError):
    """Base class for errors caused by the user's input (config, data, paths), not by a bug."""
