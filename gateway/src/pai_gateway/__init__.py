"""pai's gateway: a Python xDS control plane (delta ADS) in front of a real Envoy."""
