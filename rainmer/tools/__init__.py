"""Command-line tools of the package (checkpoint conversion, ...)."""
