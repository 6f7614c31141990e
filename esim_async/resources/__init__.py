"""Resource namespaces: each endpoint is a declaration on the shared pipeline."""

from .sims import SimsResource

__all__ = ["SimsResource"]
