"""Recognising a write that failed on a unique index, as MongoDB and the stand-in each say it."""

from pymongo.errors import DuplicateKeyError, OperationFailure

from services.common.mongo import breaks_unique_index

STAND_IN_UPDATE = (
    "[msg_update.go:133 handler.(*Handler).updateDocument] [collection.go:177 sqlite.(*collection).UpdateAll.func1] "
    "constraint failed: UNIQUE constraint failed: index 'users_5e7cc513_phone_key_1' (2067)"
)


def test_mongodb_and_the_stand_ins_inserts_say_duplicate_key():
    assert breaks_unique_index(DuplicateKeyError("E11000 duplicate key error", 11000))


def test_the_stand_ins_updates_say_internal_error_with_sqlites_message():
    assert breaks_unique_index(OperationFailure(STAND_IN_UPDATE, 1))


def test_other_failures_are_not_taken_for_it():
    assert not breaks_unique_index(OperationFailure("not authorized on yiwang_identity", 13))
