"""The one exception type that pipelines turn into a one-line error and exit code 2."""


class ICCError(ValueError):
    """Bad input or configuration: the message is shown to the user as is, without a traceback."""
