"""`python -m patchflow`: the same CLI as the `patchflow` script."""

import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main())
