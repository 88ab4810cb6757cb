"""`python -m trainer ...`: the same as `train.py ...` for a single process (or under `torchrun -m trainer`)."""

import sys

from trainer.train import main

sys.exit(main())
