"""Errors caused by the user's config, data or files. The entry point prints them as one message, no traceback."""


class KDError(Exception):
    """Base class: the message names the bad value and what would be accepted."""


class ConfigError(KDError, ValueError):
    """A config value that cannot work."""


class DataNotFoundError(KDError, FileNotFoundError):
    """The dataset is neither on disk nor downloadable; the message says where it looked and what to do."""


class MissingTeacherError(KDError, FileNotFoundError):
    """The teacher checkpoint does not exist; the message says how to train it."""


class LayerNotFoundError(KDError, KeyError):
    """A configured module path does not exist in the network; the message lists the paths that do."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class FeatureShapeError(KDError, ValueError):
    """Student and teacher features cannot be compared; the message names both layers and shapes."""


class NonFiniteLossError(KDError, FloatingPointError):
    """A training loss became NaN/inf; training stops before it can overwrite a good checkpoint."""
