"""The request context a handler receives, and access to the current one.

``Context`` (made by the server, never by users) tells a handler what it
serves: ``service``, ``endpoint``, ``metadata``, ``deadline`` and
``time_remaining()``, ``cancelled``, ``principal``. ``current_context()``
returns it from anywhere in the handler's thread or task, which is how
zmicro's clients make nested calls inherit its deadline and metadata.
"""

from __future__ import annotations

from ._core import Context, current_context

__all__ = ["Context", "current_context"]
