"""The one error type the command line reports as a message instead of a traceback."""


class UserError(Exception):
    """A mistake the user can fix: a wrong flag, a missing file, a bad config key.

    The message names the file, key or flag at fault and, where it helps, what to do.
    """
