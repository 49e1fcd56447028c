"""Accuracy on the FEBRL benchmark through the service's own path.

For each data set: Splink estimates the model from the data set's person records (what
`python -m toex_entity train-model` does from the store), the model is made active in the
service, every record is sent through the IngestRecords stream as an EMSOU source record,
and the entities the service formed are compared pair by pair with the true links. Pairs
left in the review queue count as not linked. Goal: F1 >= 0.99."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import select
from toex.entity.v1 import entity_pb2 as pb
from toex.type.v1 import security_pb2
from toex_common.db import create_engine
from toex_entity import febrl
from toex_entity.adapters import splink_model
from toex_entity.adapters.tables import source_records
from toex_entity.domain import matching
from toex_entity.domain.records import RecordType, identifiers_of
from toex_entity.service_layer import handlers

pytestmark = pytest.mark.integration

GRADING = pb.Grading(
    source_evaluation=pb.SOURCE_EVALUATION_2,
    intelligence_assessment=pb.INTELLIGENCE_ASSESSMENT_C,
    handling=security_pb2.HANDLING_CODE_P,
)


def to_proto(rec_id: str, person) -> pb.IngestRecordsRequest:  # type: ignore[no-untyped-def]
    a = person.addresses[0]
    return pb.IngestRecordsRequest(
        parent="regions/EMSOU",
        record=pb.SourceRecord(
            ref=pb.SourceRecordRef(source_system="febrl", source_record_id=rec_id),
            grading=GRADING,
            person=pb.Person(
                given_name=person.given_name,
                surname=person.surname,
                birth_date=person.birth_date,
                addresses=[pb.Address(lines=list(a.lines), town=a.town, postcode=a.postcode)],
                identifiers=[pb.OfficialIdentifier(scheme=s, value=v) for s, v in person.identifiers],
            ),
        ),
    )


@pytest.mark.parametrize("dataset", ["febrl1", "febrl2"])
async def test_febrl_pairwise_f1(entity_service, dataset: str) -> None:
    logging.getLogger("splink").setLevel(logging.WARNING)
    records, truth = febrl.load(dataset)
    rows = []
    for rec_id, person in records:
        ids = identifiers_of(RecordType.PERSON, person)
        rows.append((rec_id, matching.person_features(person, ids.official_ids, ids.e164_numbers)))
    model = splink_model.train(rows, source=dataset)
    await handlers.save_model(model, entity_service.app.deps)

    token = entity_service.token("national_coordinator.national")
    metadata = [("authorization", f"Bearer {token}")]

    async def stream():  # type: ignore[no-untyped-def]
        for rec_id, person in records:
            yield to_proto(rec_id, person)

    response = await entity_service.stub.IngestRecords(stream(), metadata=metadata)
    errors = [r.error for r in response.results if r.error]
    assert response.received_count == len(records) and not errors, errors[:3]

    engine = create_engine(entity_service.database, pool_size=1)
    try:
        async with engine.connect() as conn:
            stored = (
                await conn.execute(select(source_records.c.source_record_id, source_records.c.entity_id))
            ).all()
    finally:
        await engine.dispose()
    clusters = {row.source_record_id: row.entity_id for row in stored}
    assert len(clusters) == len(records)
    scores = febrl.pairwise(clusters, truth)
    print(
        f"\n{dataset} ({len(records)} records, {len(truth)} true links): {scores}; "
        f"{response.review_count} records sent to review; model {model.version} {uuid.uuid4().hex[:0]}"
    )
    assert scores.f1 >= 0.99, str(scores)
