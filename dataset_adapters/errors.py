"""Errors about OpenSDI data that the command line reports as a message, not a traceback."""


class OpenSDIError(ValueError):
    """Bad or missing OpenSDI input; the message names the file, key or shard at fault."""
