"""How many periods a bulk operation (``start-all``, ``usage send``) talks to at once.

Each is a short round trip to one period's workflow, so many in flight keep the workers
busy without flooding the server. Its own module so that the CLI can show it in its help
without importing the Temporal client.
"""

DEFAULT_CONCURRENCY = 32

FOLLOW_CONCURRENCY = 64
"""``recompute_grace_period`` signals in flight at once (``period follow-settings``,
``catalog load``): each is one round trip of a few milliseconds, with no answer to wait for."""
