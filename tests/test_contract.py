"""One vocabulary: the ledger's refusals, the dialplan's reasons and the destination classes."""

from __future__ import annotations

import pytest

from rating_engine.contract import REASON_OF, DestinationClass, Reason, Refusal
from rating_engine.ledger import ExtensionSettings, LedgerError


def test_every_refusal_is_told_to_the_dialplan_by_the_reason_of_its_name() -> None:
    assert set(REASON_OF) == set(Refusal)
    for refusal, reason in REASON_OF.items():
        if refusal in (Refusal.UNKNOWN_CALL, Refusal.DUPLICATE_CALL, Refusal.SETTINGS_CHANGED):  # the caller's own
            assert reason is Reason.ENGINE_ERROR
        else:
            assert reason.value == refusal.value and reason.name == refusal.name


def test_extension_kinds_are_the_destination_classes_and_nothing_else() -> None:
    s = ExtensionSettings(classes=frozenset({"national", "premium"}))  # type: ignore[arg-type]
    assert s.classes == frozenset({DestinationClass.NATIONAL, DestinationClass.PREMIUM})
    assert all(type(c) is DestinationClass for c in s.classes)
    with pytest.raises(LedgerError, match="unknown destination kind"):
        ExtensionSettings(classes=frozenset({"national", "satellite"}))  # type: ignore[arg-type]
