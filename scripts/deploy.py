#!/usr/bin/env python3
"""Deploy scorer to an Azure resource group: `scripts/deploy.py --help`. The logic is
scorer/azure/deploy.py; this entry point runs it from a checkout without installing."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scorer.azure.deploy import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
