"""The one exception type for data a user can get wrong (missing files, bad images, bad options)."""
from rainmer.errors import UserError


class DataError(UserError, ValueError):
    """Raised for user-fixable data problems; the message always names the file or the option."""
