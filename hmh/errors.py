"""The project's error base class: the CLI prints these as one clear line instead of a traceback."""


class HmhError(Exception):
    """A user-facing error whose message names the file, key or value at fault."""
