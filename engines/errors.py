"""engines' exceptions (see parley.errors for the whole tree).

ParleyError
 └── EngineError            a bundle or backend cannot be used
      └── ManifestError     manifest.json is missing, corrupt, invalid or from a newer format
"""

from parley.errors import ParleyError


class EngineError(ParleyError):
    """Base of engines' errors."""


class ManifestError(EngineError):
    """A bundle's manifest.json that cannot be read; the message names the file."""
