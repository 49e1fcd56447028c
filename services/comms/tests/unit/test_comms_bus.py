"""The consumers on the bus keep the durable names they had before the bus (a new name would
read the streams again from their start), and the job grants are kept under their own."""

from __future__ import annotations

from toex_common.events.bus import subject_of
from toex_common.grants import ACCESS_EVENTS
from toex_comms.bootstrap import event_bus
from toex_comms.config import Settings


def test_the_consumers_keep_their_durable_names_and_subjects() -> None:
    bus = event_bus(Settings(consume_events=True))

    assert bus.names == ["comms-jobs", "comms-entities", "comms-job-grants"]
    assert bus.subjects("comms-jobs") == ["toex.*.tasking.JobCreated"]
    # Merges and splits join the links on the one entity consumer: taken in the order published.
    assert bus.subjects("comms-entities") == [
        "toex.*.entity.RecordLinked",
        "toex.*.entity.EntitiesMerged",
        "toex.*.entity.EntitySplit",
    ]
    # Every event of tasking's that says who may work a job (the platform's list).
    assert bus.subjects("comms-job-grants") == [subject_of(e) for e in ACCESS_EVENTS]
    assert "toex.*.tasking.JobStatusChanged" in bus.subjects("comms-job-grants")
    assert [s.name for s in bus.streams()] == ["TASKING", "ENTITY"]


def test_an_installation_that_consumes_nothing_has_no_consumers() -> None:
    assert event_bus(Settings(consume_events=False)).names == []
