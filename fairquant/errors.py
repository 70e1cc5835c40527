"""The one exception type that stages turn into a one-line message and a non-zero exit."""


class FairquantError(Exception):
    """A problem with the user's input: the message says what was expected, what was found, and the fix."""
