"""pai lineage: datasets, the model registry and the lineage graph."""
