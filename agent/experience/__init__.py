"""In-session experience on Windows: input delay, protocol round trips and traffic per session, from
performance counters (docs/sessions.md "Experience counters").

`pdh` is the thin pywin32 layer, `counters` the pure parsing and mapping of what it returns, `totals`
the counters since the agent started that become the `experience` reading.
"""
