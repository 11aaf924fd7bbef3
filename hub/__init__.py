"""EduHub: the event-driven integration hub of the Hải Phòng education sector."""

__version__ = "0.1.0"
