"""stream's exceptions (see parley.errors for the whole tree).

ParleyError
 └── StreamError            anything the worker or the stream CLI refuses to do
      ├── TopicError        a topic is missing or has the wrong shape
      └── RoundTripError    messages sent did not all come back
"""

from parley.errors import ParleyError


class StreamError(ParleyError):
    """Base of stream's errors."""


class TopicError(StreamError):
    """A topic that should exist does not, or exists with fewer partitions than configured."""


class RoundTripError(StreamError):
    """What was sent through Kafka (or Redis) did not come back complete and in order."""
