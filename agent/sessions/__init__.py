"""Where user sessions are read: the WTS API on Windows, logind or utmp on Linux.

Each source turns what its OS says into `model.Session` values with the states
and protocols of the report contract; the `sessions` collector
(agent/collectors/sessions.py) adds what needs history (lifecycle counters,
process CPU) and privacy (pseudonyms). docs/sessions.md is the prose version.
"""
