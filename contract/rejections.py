"""Every reason the collector gives for refusing a report, defined once.

A reason is the `reason` field of a refusal's JSON answer and of each of its
`problems`, and the value of the `reason` label of
`vdi_collector_reports_rejected_total`: `REJECTION_REASONS` is that closed set,
in the order the collector exports it. docs/report-format.md documents each one
(tests/agent/test_docs.py holds the page to this tuple).
"""

from __future__ import annotations

# The contract's own (contract/report.py), all answered 400.
REASON_MISSING = "missing"
REASON_TYPE = "wrong_type"
REASON_RANGE = "out_of_range"
REASON_NOT_FINITE = "not_finite"
REASON_TOO_LONG = "too_long"
REASON_INVALID = "invalid_value"
REASON_TOO_MANY = "too_many_items"
REASON_DUPLICATE = "duplicate"
REASON_SCHEMA = "unsupported_schema_version"

# The HTTP edge's: the body before it is a document.
REASON_BAD_JSON = "bad_json"  # 400
REASON_TOO_DEEP = "too_deep"  # 400
REASON_BODY_TOO_LARGE = "body_too_large"  # 413
REASON_BAD_CONTENT_TYPE = "bad_content_type"  # 415
REASON_BAD_ENCODING = "bad_encoding"  # 415, or 400 for bad gzip
REASON_LENGTH_REQUIRED = "length_required"  # 411

# Authentication's (collector/auth.py): who may push, and for what.
REASON_UNAUTHENTICATED = "unauthenticated"  # 401
REASON_FORBIDDEN = "forbidden"  # 403

# The store's: a valid report it may not take.
REASON_TOO_MANY_HOSTS = "too_many_hosts"  # 429
REASON_TOO_FREQUENT = "too_frequent"  # 429
REASON_HOST_OWNED = "host_owned"  # 409

CONTRACT_REASONS = (REASON_MISSING, REASON_TYPE, REASON_RANGE, REASON_NOT_FINITE, REASON_TOO_LONG, REASON_INVALID,
                    REASON_TOO_MANY, REASON_DUPLICATE, REASON_SCHEMA)
REJECTION_REASONS = CONTRACT_REASONS + (
    REASON_BAD_JSON, REASON_TOO_DEEP, REASON_BODY_TOO_LARGE, REASON_BAD_CONTENT_TYPE, REASON_BAD_ENCODING,
    REASON_LENGTH_REQUIRED, REASON_TOO_MANY_HOSTS, REASON_TOO_FREQUENT, REASON_UNAUTHENTICATED, REASON_FORBIDDEN,
    REASON_HOST_OWNED,
)

# Answers that refuse a request rather than a report, never counted as a rejected report: the
# password checks are saturated (503 on a protected page), the connection caps are reached (503), or the
# request head breaks HTTP (400).
REASON_BUSY = "busy"
REASON_TOO_MANY_CONNECTIONS = "too_many_connections"
REASON_BAD_REQUEST = "bad_request"
REFUSAL_REASONS = (REASON_BUSY, REASON_TOO_MANY_CONNECTIONS, REASON_BAD_REQUEST)
