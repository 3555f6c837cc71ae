"""`python -m signer.cli`: the same as the `wallet-signer` console script."""

import sys

from signer.cli import main

sys.exit(main())
