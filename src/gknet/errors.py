"""The one exception type that the CLI turns into a single clear error line."""


class GknetError(Exception):
    """A user-facing error: bad input, missing file, invalid config. No traceback shown."""
