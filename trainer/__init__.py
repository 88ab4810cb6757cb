"""The trainer that every PyTorchJob replica runs (`train.py`). Stands alone: never imports `api` or `broker`."""
