"""`make run` and the local embedded stack with the seed-system simulators; never imported by production code."""
