"""Logon duration and failed logons from a Windows host's own event logs (issue 15).

`events` turns one rendered event (the XML that EvtRender produces) into a small
typed record; `matching` puts a session's records together into one logon with
its phases, and maps a failed logon's status codes to a closed set of reasons.
Both are pure and run anywhere; docs/logons.md says what each event means and
where that is documented.
"""
