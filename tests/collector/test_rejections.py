"""The closed set of rejection reasons: one module, every reason once, every one exported from the start."""

from __future__ import annotations

import re

from collector.selfmetrics import SelfMetrics
from collector.store import HostStore
from contract import rejections
from contract.rejections import REFUSAL_REASONS, REJECTION_REASONS


def test_every_reason_of_the_module_is_in_exactly_one_closed_tuple() -> None:
    defined = {v for k, v in vars(rejections).items() if k.startswith("REASON_")}
    assert len(REJECTION_REASONS) == len(set(REJECTION_REASONS))
    assert set(REJECTION_REASONS) | set(REFUSAL_REASONS) == defined
    assert not set(REJECTION_REASONS) & set(REFUSAL_REASONS)
    assert all(re.fullmatch(r"[a-z_]+", r) for r in defined)


def test_every_rejection_reason_is_exported_at_zero_before_any_refusal() -> None:
    store = HostStore()
    text = SelfMetrics(store, process_metrics=False).render()
    exported = re.findall(r'^vdi_collector_reports_rejected_total\{reason="([a-z_]+)"\} 0\.0$', text, re.M)
    assert exported == list(REJECTION_REASONS)
