"""How many periods a bulk operation (``start-all``, ``usage send``) talks to at once.

Each is a short round trip to one period's workflow, so many in flight keep the workers
busy without flooding the server. Its own module so that the CLI can show it in its help
without importing the Temporal client.
"""

DEFAULT_CONCURRENCY = 32
