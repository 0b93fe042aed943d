"""Building blocks of the Rainmer and DRSformer networks (not scanned: no ``*_arch.py`` names here)."""
