"""The ground floor: the hub.yaml config model and the Prometheus metrics; imports nothing of ours."""

__version__ = "0.1.0"
