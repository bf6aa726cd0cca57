"""``python -m featzoo ...`` (and ``torchrun ... -m featzoo extract ...``) runs the ``featzoo`` command."""
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())
