"""EduHub: the event-driven integration hub of the Hải Phòng education sector (module map: docs/architecture.md)."""

from hub.core import __version__

__all__ = ["__version__"]
