"""EduHub's test suite: unit tests (fast, no services) and integration tests (real parts)."""
