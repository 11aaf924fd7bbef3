"""The stream stages: validate, dedup, route and HTTP delivery."""
