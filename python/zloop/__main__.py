"""python -m zloop — info, run and bench; see zloop._cli."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
