"""The worker process: the Faust app wiring the stages, its web endpoints and the status page."""
