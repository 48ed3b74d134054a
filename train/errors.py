"""train's exceptions (see parley.errors for the whole tree).

ParleyError
 └── TrainError             training or labelling cannot go on
"""

from parley.errors import ParleyError


class TrainError(ParleyError):
    """Base of train's errors."""
