"""The one exception type for data a user can get wrong (missing files, bad images, bad options)."""


class DataError(ValueError):
    """Raised for user-fixable data problems; the message always names the file or the option."""
