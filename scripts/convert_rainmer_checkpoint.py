"""Convert a public Rainmer checkpoint to this package's keys: see :mod:`rainmer.tools.convert_checkpoint`."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
from rainmer.tools.convert_checkpoint import main

if __name__ == '__main__':
    raise SystemExit(main())
