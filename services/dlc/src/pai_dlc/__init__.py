"""pai dlc: distributed training jobs."""
