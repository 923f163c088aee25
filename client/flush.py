"""How often a client sends, agreed between the client and the service, in one place.

The client sends what it has at least every ``DEFAULT_INTERVAL`` seconds; a loaded service asks
for longer in the ``HINT_HEADER`` of its answers, never past ``HINT_MAX`` (the client caps what
it reads there, so a wrong hint cannot silence a run for long). The service imports these
values rather than restating them: its hint fades out once it is no longer than the client's
default, and its setting for the longest hint defaults to the client's cap. Standard library
only, like the rest of the client's import path.
"""

#: seconds between two sends at most, unless the service asks for longer
DEFAULT_INTERVAL = 0.5
#: the answer header that carries the service's hint (seconds, a decimal number)
HINT_HEADER = "X-Losswatch-Flush-Interval"
#: the longest wait a hint can ask for, seconds
HINT_MAX = 30.0
