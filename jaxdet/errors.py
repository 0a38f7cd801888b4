"""Errors the scripts report as one line, without a traceback: each names what went wrong and
what to do, and nothing in the traceback would help a user further."""


class ReportedError(Exception):
  """Base of the errors the command-line tools (``jaxdet.tools``) print as ``error: <message>``
  and exit 1 on."""


class InvalidSetupError(ReportedError, ValueError):
  """A config, dataset or command line that no run can use, refused before training starts."""
