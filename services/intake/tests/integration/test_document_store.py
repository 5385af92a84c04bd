"""Uploaded documents on the real server: chunks counted from the document's record (no filter on
the chunks), an aborted upload leaves nothing, ownership checked per document."""

from __future__ import annotations

from datetime import UTC, datetime

from services.intake.storage import IntakeStore

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def uploaded(store: IntakeStore, document_id: str, owner: str, chunks: int, finish: bool = True) -> None:
    store.begin_document(document_id, owner, NOW)
    for n in range(chunks):
        store.add_chunk(document_id, n, bytes([n]) * 10)
    if finish:
        assert store.finish_document(document_id, {"chunks": chunks})


def test_chunks_are_counted_once_each_even_when_retried(store):
    store.begin_document("d1", "u1", NOW)
    assert store.chunk_count("d1") == 0
    for n in (0, 1, 1, 2):
        store.add_chunk("d1", n, b"x")
    assert store.chunk_count("d1") == 3
    assert store.document_chunks.count_documents({"document_id": "d1"}) == 3


def test_an_aborted_upload_leaves_nothing_not_even_an_unrecorded_last_chunk(store):
    uploaded(store, "d1", "u1", 3, finish=False)
    store.document_chunks.insert_one({"_id": "d1:000003", "document_id": "d1", "n": 3})  # stored, not recorded
    uploaded(store, "d2", "u1", 2)
    store.drop_document("d1")
    assert store.document("d1") is None
    assert store.document_chunks.count_documents({"document_id": "d1"}) == 0
    assert store.document_chunks.count_documents({"document_id": "d2"}) == 2


def test_only_the_owners_complete_documents_count_as_owned(store):
    uploaded(store, "mine", "u1", 1)
    uploaded(store, "theirs", "u2", 1)
    uploaded(store, "unfinished", "u1", 1, finish=False)
    offered = ["mine", "theirs", "unfinished", "missing", "mine"]
    assert store.owned_documents("u1", offered) == {"mine"}
