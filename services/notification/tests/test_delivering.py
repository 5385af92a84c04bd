"""The notification worker's delivery, preference and reviewer paths, with the store and the
channels replaced (no broker, no providers)."""

from datetime import UTC, date, datetime, timedelta
from unittest.mock import MagicMock

import eventlet
import pytest
from nameko.testing.services import worker_factory
from prometheus_client import REGISTRY
from pymongo.errors import DuplicateKeyError

from contracts.envelope import new_event
from contracts.events import CaseDeadlineWarning, CaseOverdue, CaseResubmitted, CertificateIssued
from contracts.notifications import NotificationView
from services.common.errors import NotFound, Unavailable, ValidationFailed
from services.notification import messages
from services.notification.channels import OutboundChannels
from services.notification.contacts import ContactCache
from services.notification.deliveries import Outcome, Policy
from services.notification.sending_now import SendingNow
from services.notification.service import LEASE, MAX_SILENT_ATTEMPTS, NotificationService
from services.notification.storage import RATE_BLOCK, NotificationStore

CITIZEN = {"user_id": "u-1", "account_type": "citizen", "roles": ["applicant"]}
REVIEWER = {"user_id": "r-1", "account_type": "staff", "roles": ["reviewer"], "department_code": "620524MZ"}
CASE = {"case_no": "620524MZ-20261123-000007", "item_code": "62052400MZ-GF-0001", "item_name": "高龄津贴申领"}
NOW = datetime.now(UTC)


def answer(method, value=None, error=None):
    reply = method.call_async.return_value
    if error is not None:
        reply.result.side_effect = error
    else:
        reply.result.return_value = value


@pytest.fixture
def store():
    store = MagicMock()
    store.create.return_value = []  # nothing queued to send from the handler
    store.channels_chosen.return_value = None
    store.channels_to_notify.return_value = None
    store.claim.return_value = {}  # the entry as it was: an older one, without what its send needs
    store.take_rate_token.return_value = True
    return store


@pytest.fixture
def outbound():
    return OutboundChannels(
        sms=MagicMock(), email=MagicMock(), policy=Policy(retry_base=2), rate_limits={"sms": 5, "email": 5}
    )


@pytest.fixture
def service(store, outbound):
    service = worker_factory(
        NotificationService, store=store, outbound=outbound, contacts=ContactCache(), sending_now=SendingNow()
    )
    answer(service.identity.contact, {"user_id": "u-1", "phone": "13800138000", "email": "zhang@example.cn"})
    return service


def stored(channel="sms", status="pending", **state):
    return {
        "_id": "n1",
        "event_id": "e1",
        "recipient": "u-1",
        "case_no": CASE["case_no"],
        "content": {
            "sms": {"title": "", "body": "【一网通办】短信"},
            "email": {"title": "主题", "body": "正文"},
        },
        "channels": {"inbox": {"status": "delivered"}, channel: {"status": status, "attempts": 0, **state}},
    }


# What an SMS's queue entry keeps after its send (deliveries.receipt_context).
SENT = {"reference": "m-1", "sent_at": NOW, "traceparent": None, "case_no": CASE["case_no"], "event_id": "e1"}


def entry(channel="sms", created_at=NOW):
    return {
        "_id": f"n1:{channel}",
        "notification_id": "n1",
        "recipient": "u-1",
        "channel": channel,
        "next_at": NOW,
        "created_at": created_at,
    }


def test_a_due_sms_is_sent_with_its_delivery_as_reference_then_its_receipt_awaited(service, store, outbound):
    store.due.return_value = [entry()]
    store.get.return_value = stored()
    outbound.sms.send.return_value = Outcome("accepted", reference="m-1")
    assert service.deliver_due() == 1
    outbound.sms.send.assert_called_once_with("13800138000", "【一网通办】短信", "n1:sms")
    notification_id, channel, changes = store.update_channel.call_args.args
    assert (notification_id, channel, changes["status"], changes["reference"]) == ("n1", "sms", "sent", "m-1")
    # The entry keeps what the receipt step needs, so that step reads no notification.
    (entry_id, at), kept = store.reschedule.call_args
    assert entry_id == "n1:sms" and at > NOW
    assert kept["sent"] == {**SENT, "sent_at": changes["sent_at"]}
    store.finish.assert_not_called()


def test_an_email_goes_to_the_accounts_address(service, store, outbound):
    store.due.return_value = [entry("email")]
    store.get.return_value = stored("email")
    outbound.email.send.return_value = Outcome("delivered", reference="<x@yiwang.local>")
    service.deliver_due()
    outbound.email.send.assert_called_once_with("zhang@example.cn", "主题", "正文", "n1:email")
    assert store.update_channel.call_args.args[2]["status"] == "delivered"
    store.finish.assert_called_once_with("n1:email")


def test_a_provider_outage_is_retried_later(service, store, outbound):
    store.due.return_value = [entry()]
    store.get.return_value = stored()
    outbound.sms.send.return_value = Outcome("temporary", error="SMS provider unreachable: ConnectionError")
    service.deliver_due()
    changes = store.update_channel.call_args.args[2]
    assert changes["status"] == "pending" and changes["attempts"] == 1
    (entry_id, at), _ = store.reschedule.call_args
    assert entry_id == "n1:sms" and at > datetime.now(UTC)


def test_identity_down_is_a_temporary_failure(service, store, outbound):
    answer(service.identity.contact, error=Unavailable("identity.contact did not answer in 5s"))
    store.due.return_value = [entry()]
    store.get.return_value = stored()
    service.deliver_due()
    outbound.sms.send.assert_not_called()
    assert store.update_channel.call_args.args[2]["status"] == "pending"


def test_no_rate_token_is_taken_before_the_contact_is_known(service, store, outbound):
    # A token counts a send in its second: taken before a slow lookup, the sends of several counted
    # seconds could reach the provider in one. A send that cannot be made takes none.
    order = []
    store.take_rate_token.side_effect = lambda *args: order.append("token") or True

    def contact(*args):
        order.append("contact")
        return {"user_id": "u-1", "phone": "13800138000", "email": None}

    service.identity.contact.call_async.return_value.result.side_effect = contact
    store.due.return_value = [entry()]
    store.get.return_value = stored()
    outbound.sms.send.return_value = Outcome("accepted", reference="m-1")
    service.deliver_due()
    assert order == ["contact", "token"]

    answer(service.identity.contact, error=Unavailable("identity.contact did not answer in 5s"))
    service.contacts = ContactCache()  # nothing kept from the first
    store.take_rate_token.reset_mock()
    service.deliver_due()
    store.take_rate_token.assert_not_called()


def test_a_contact_answer_not_understood_counts_as_an_attempt(service, store, outbound, caplog):
    # Retried like an outage, and so failed in the end, not left claimed and retried for ever.
    answer(service.identity.contact, {"user_id": "u-1", "phone": 13800138000})  # not a contact
    store.due.return_value = [entry()]
    store.get.return_value = stored()
    service.deliver_due()
    outbound.sms.send.assert_not_called()
    changes = store.update_channel.call_args.args[2]
    assert (changes["status"], changes["attempts"]) == ("pending", 1)
    store.reschedule.assert_called_once()
    assert "contact lookup failed" in caplog.text


def test_each_claim_counts_its_lease_from_its_own_moment(service, store, outbound):
    # A run's sends go one after another per person: a claim made late in a long run must still be
    # a whole lease from now, or another process could take the entry while it is being sent.
    def due(notification_id):  # one person's: sent one after the other
        return {**entry(), "_id": f"{notification_id}:sms", "notification_id": notification_id, "recipient": "u-1"}

    store.due.return_value = [due("received-1"), due("approved-1")]
    store.get.side_effect = lambda notification_id: {**stored(), "_id": notification_id}

    def slow_send(phone, body, reference):
        eventlet.sleep(0.2)
        return Outcome("accepted", reference=f"m-{reference}")

    outbound.sms.send.side_effect = slow_send
    service.deliver_due()
    first, second = (call.args[1] for call in store.claim.call_args_list)
    assert second - first >= timedelta(seconds=0.2)


def test_no_phone_on_the_account_fails_for_good(service, store, outbound):
    answer(service.identity.contact, {"user_id": "u-1", "phone": None, "email": None})
    store.due.return_value = [entry()]
    store.get.return_value = stored()
    service.deliver_due()
    changes = store.update_channel.call_args.args[2]
    assert changes["status"] == "failed" and changes["error"] == "the account has no phone number"
    store.finish.assert_called_once_with("n1:sms")


@pytest.mark.parametrize("kept", [False, True], ids=["entry-from-before", "entry-kept-what-it-needs"])
def test_a_sent_sms_asks_the_provider_for_its_receipt(service, store, outbound, kept):
    if kept:
        store.due.return_value = [{**entry(), "sent": SENT}]
    else:  # an entry without it: the notification says `sent`
        store.due.return_value = [entry()]
        store.get.return_value = stored(status="sent", reference="m-1", sent_at=NOW)
    outbound.sms.receipt.return_value = Outcome("delivered", reference="m-1")
    service.deliver_due()
    assert store.get.called is not kept  # what the entry kept spares reading the notification
    assert store.claim.called is not kept  # asking twice is harmless: no claim
    outbound.sms.receipt.assert_called_once_with("m-1")
    outbound.sms.send.assert_not_called()
    assert store.update_channel.call_args.args[:2] == ("n1", "sms")
    assert store.update_channel.call_args.args[2]["status"] == "delivered"
    if kept:  # never claimed: its entry goes with the run's other receipts, after them
        store.finish.assert_not_called()
        store.finish_all.assert_called_once_with(["n1:sms"])
    else:  # claimed: its entry goes at once
        store.finish.assert_called_once_with("n1:sms")
        store.finish_all.assert_called_once_with([])  # not among the run's receipts


def test_the_receipts_of_one_run_are_finished_in_one_delete_after_they_are_recorded(service, store, outbound):
    def receipt(entry_id: str, reference: str) -> dict:
        sent = {**SENT, "reference": reference}
        return {**entry(), "_id": entry_id, "notification_id": entry_id.split(":")[0], "sent": sent}

    store.due.return_value = [receipt("n1:sms", "m-1"), receipt("n2:sms", "m-2"), receipt("n3:sms", "m-3")]
    # m-2 has no receipt yet: its entry is asked again later and stays.
    outbound.sms.receipt.side_effect = lambda ref: Outcome("accepted" if ref == "m-2" else "delivered", reference=ref)
    service.deliver_due()
    writes = [call[0] for call in store.mock_calls if call[0] in ("update_channel", "finish", "finish_all")]
    assert writes == ["update_channel"] * 3 + ["finish_all"]  # recorded first, then one delete
    assert sorted(store.finish_all.call_args.args[0]) == ["n1:sms", "n3:sms"]
    assert store.reschedule.call_args.args[0] == "n2:sms"


def test_a_receipt_another_process_recorded_first_is_not_counted_again(service, store, outbound):
    def delivered() -> float:
        return REGISTRY.get_sample_value("yiwang_deliveries_total", {"channel": "sms", "status": "delivered"}) or 0

    outbound.sms.receipt.return_value = Outcome("delivered", reference="m-1")
    before = delivered()
    for written in (True, False):  # the second process's write finds it delivered already
        store.update_channel.return_value = written
        store.due.return_value = [{**entry(), "sent": SENT}]
        service.deliver_due()
    assert delivered() == before + 1
    assert store.finish_all.call_count == 2  # its entry goes either way


def test_no_receipt_yet_asks_again_later_keeping_what_the_entry_holds(service, store, outbound):
    store.due.return_value = [{**entry(), "sent": SENT}]
    outbound.sms.receipt.return_value = Outcome("accepted", reference="m-1")
    service.deliver_due()
    store.get.assert_not_called()
    assert all(call.args[2] == {} for call in store.update_channel.call_args_list)  # nothing changed
    (entry_id, at), kept = store.reschedule.call_args
    assert entry_id == "n1:sms" and at > NOW and kept["sent"] is None  # kept already: not written again


def test_over_the_rate_limit_waits_without_counting_an_attempt(service, store, outbound):
    store.take_rate_token.return_value = False
    store.due.return_value = [entry()]
    store.get.return_value = stored()
    service.deliver_due()
    outbound.sms.send.assert_not_called()
    store.update_channel.assert_not_called()
    store.reschedule.assert_called_once()


def test_an_entry_another_process_claimed_is_left_alone(service, store, outbound):
    store.claim.return_value = None
    store.due.return_value = [entry()]
    assert service.deliver_due() == 0
    store.get.assert_not_called()


def test_a_finished_delivery_is_not_sent_again(service, store, outbound):
    store.due.return_value = [entry()]
    store.get.return_value = stored(status="delivered")
    service.deliver_due()
    outbound.sms.send.assert_not_called()
    store.finish.assert_called_once_with("n1:sms")


def test_an_entry_for_a_channel_its_notification_lacks_is_dropped_not_retried_forever(service, store, outbound):
    # Queued by a redelivery before such entries were refused: the notification has no email.
    store.due.return_value = [entry("email")]
    store.get.return_value = stored("sms")
    service.deliver_due()
    outbound.email.send.assert_not_called()
    store.finish.assert_called_once_with("n1:email")


# What a new entry keeps for its send (deliveries.send_context of `stored()`).
SEND = {
    "recipient": "u-1",
    "content": {"title": "", "body": "【一网通办】短信"},
    "traceparent": None,
    "case_no": CASE["case_no"],
    "event_id": "e1",
    "attempts": 0,
}


def kept_send(**fields):
    return {**entry(), "send": {**SEND, **fields}, "leases": 0}


def test_a_new_entry_is_sent_from_what_it_keeps_then_recorded_entry_first(service, store, outbound):
    store.due.return_value = [kept_send()]
    store.claim.return_value = kept_send()
    outbound.sms.send.return_value = Outcome("accepted", reference="m-1")
    assert service.deliver_due() == 1
    store.get.assert_not_called()
    outbound.sms.send.assert_called_once_with("13800138000", "【一网通办】短信", "n1:sms")
    writes = [call[0] for call in store.mock_calls if call[0] in ("reschedule", "update_channel", "finish")]
    assert writes == ["reschedule", "update_channel"]  # a crash between costs the notification's write only
    kept = store.reschedule.call_args.kwargs
    changes = store.update_channel.call_args.args[2]
    assert changes["status"] == "sent" and kept["attempts"] == 1
    assert kept["sent"] == {**SENT, "sent_at": changes["sent_at"]}


def test_a_retry_counts_its_attempts_in_the_entry(service, store, outbound):
    store.due.return_value = [kept_send(attempts=2)]
    store.claim.return_value = kept_send(attempts=2)
    outbound.sms.send.return_value = Outcome("temporary", error="SMS provider unreachable: ConnectionError")
    service.deliver_due()
    (_, at), kept = store.reschedule.call_args
    assert kept == {"sent": None, "attempts": 3} and at > NOW + timedelta(seconds=7)  # 2 s doubled twice
    assert store.update_channel.call_args.args[2]["attempts"] == 3


def test_a_finished_delivery_is_recorded_before_its_entry_goes(service, store, outbound):
    store.due.return_value = [{**kept_send(), "_id": "n1:email", "channel": "email"}]
    store.claim.return_value = {**kept_send(content={"title": "主题", "body": "正文"}), "_id": "n1:email"}
    outbound.email.send.return_value = Outcome("delivered", reference="<x@yiwang.local>")
    service.deliver_due()
    outbound.email.send.assert_called_once_with("zhang@example.cn", "主题", "正文", "n1:email")
    writes = [call[0] for call in store.mock_calls if call[0] in ("reschedule", "update_channel", "finish")]
    assert writes == ["update_channel", "finish"]


def test_an_attempt_that_ended_without_a_word_reads_the_notification(service, store, outbound):
    # Claimed before and never rescheduled: the process died after recording, before deleting.
    store.due.return_value = [kept_send()]
    store.claim.return_value = {**kept_send(), "leases": 1}
    store.get.return_value = stored(status="delivered")
    service.deliver_due()
    store.get.assert_called_once_with("n1")
    outbound.sms.send.assert_not_called()
    store.finish.assert_called_once_with("n1:sms")


def test_a_delivery_whose_attempts_keep_ending_without_a_word_fails(service, store, outbound):
    # Each claim of an attempt that raised (or whose process died) counted; an outcome resets them.
    store.due.return_value = [kept_send()]
    store.claim.return_value = {**kept_send(), "leases": MAX_SILENT_ATTEMPTS - 1}
    store.get.return_value = stored()
    store.get.side_effect = KeyError("an attempt that keeps raising")
    service.deliver_due()
    store.update_channel.assert_not_called()
    store.finish.assert_not_called()  # tried again when its lease ends

    store.claim.return_value = {**kept_send(), "leases": MAX_SILENT_ATTEMPTS}
    service.deliver_due()
    notification_id, channel, changes = store.update_channel.call_args.args
    assert (notification_id, channel, changes["status"]) == ("n1", "sms", "failed")
    assert "without an outcome" in changes["error"]
    store.finish.assert_called_once_with("n1:sms")
    outbound.sms.send.assert_not_called()


def test_an_entry_without_its_notification_waits_then_is_dropped(service, store, outbound):
    store.get.return_value = None
    store.due.return_value = [entry(created_at=NOW)]
    service.deliver_due()
    store.finish.assert_not_called()
    store.due.return_value = [entry(created_at=NOW - timedelta(hours=1))]
    service.deliver_due()
    store.finish.assert_called_once_with("n1:sms")


# --- sent at once by the event's handler ------------------------------------------------------------
def resubmitted(applicant_id="u-1"):
    payload = CaseResubmitted(**CASE, department_code="620524MZ", applicant_id=applicant_id, by=applicant_id, at=NOW)
    return new_event(payload, "intake").model_dump(mode="json")


def queued_claimed(doc, channels, now, claim_for=None):
    """What the store queues: the entries, claimed when asked to (as NotificationStore.create)."""
    due = {"next_at": now} if claim_for is None else {"next_at": now + claim_for, "leases": 1}
    send = {**SEND, "recipient": doc["recipient"]}
    return [
        {**entry(channel), "_id": f"{doc['_id']}:{channel}", "recipient": doc["recipient"], **due, "send": send}
        for channel in channels
    ]


def test_a_new_sms_is_queued_claimed_and_sent_by_the_handler_at_once(service, store, outbound):
    store.create.side_effect = queued_claimed
    outbound.sms.send.return_value = Outcome("accepted", reference="m-1")
    service.on_case_resubmitted(resubmitted())
    assert store.create.call_args.kwargs == {"claim_for": LEASE}
    outbound.sms.send.assert_not_called()  # after the handler: its event is acked first
    service.sending_now.wait()
    doc = store.create.call_args.args[0]
    outbound.sms.send.assert_called_once_with("13800138000", "【一网通办】短信", f"{doc['_id']}:sms")
    # No claim (the entry was queued claimed) and no read of the notification (the entry keeps it).
    store.claim.assert_not_called()
    store.get.assert_not_called()
    writes = [call[0] for call in store.mock_calls if call[0] in ("reschedule", "update_channel", "finish")]
    assert writes == ["reschedule", "update_channel"]
    assert store.reschedule.call_args.kwargs["sent"]["reference"] == "m-1"


def test_without_a_free_slot_the_timer_sends_what_the_handler_queued(store, outbound):
    busy = worker_factory(
        NotificationService, store=store, outbound=outbound, contacts=ContactCache(), sending_now=SendingNow(0)
    )
    store.create.side_effect = queued_claimed
    busy.on_case_resubmitted(resubmitted())
    busy.sending_now.wait()
    assert store.create.call_args.kwargs == {"claim_for": None}
    outbound.sms.send.assert_not_called()


def test_a_redelivered_event_sends_nothing_from_its_handler(service, store, outbound):
    store.create.return_value = None  # notified already: what is missing is queued for the timer
    service.on_case_resubmitted(resubmitted())
    service.sending_now.wait()
    outbound.sms.send.assert_not_called()
    store.reschedule.assert_not_called()


def test_a_send_that_fails_in_the_handler_is_logged_and_the_event_still_handled(service, store, outbound, caplog):
    store.create.side_effect = queued_claimed
    store.take_rate_token.side_effect = ConnectionError("store gone")
    service.on_case_resubmitted(resubmitted())
    service.sending_now.wait()  # nothing raised: the entry stays claimed, the timer tries again
    assert "delivery attempt failed" in caplog.text
    outbound.sms.send.assert_not_called()


def test_after_a_failed_send_the_notifications_other_channel_is_still_sent(service, store, outbound, caplog):
    store.channels_to_notify.return_value = ["inbox", "sms", "email"]
    store.create.side_effect = queued_claimed
    outbound.sms.send.side_effect = ConnectionError("provider gone mid-call")
    outbound.email.send.return_value = Outcome("delivered", reference="<x@yiwang.local>")
    service.on_case_resubmitted(resubmitted())
    service.sending_now.wait()
    assert "delivery attempt failed" in caplog.text
    outbound.email.send.assert_called_once()
    store.finish.assert_called_once()  # the email's entry; the SMS's stays claimed for the timer


def test_an_entry_whose_claim_is_nearly_over_is_left_to_the_timer(service, store, outbound):
    def claimed_long_ago(doc, channels, now, claim_for=None):  # it waited behind the person's slow sends
        return queued_claimed(doc, channels, now - claim_for + timedelta(seconds=5), claim_for)

    store.create.side_effect = claimed_long_ago
    service.on_case_resubmitted(resubmitted())
    service.sending_now.wait()
    outbound.sms.send.assert_not_called()
    store.take_rate_token.assert_not_called()


def test_an_sms_over_the_rate_limit_waits_for_the_timer(service, store, outbound):
    store.create.side_effect = queued_claimed
    store.take_rate_token.return_value = False
    service.on_case_resubmitted(resubmitted())
    service.sending_now.wait()
    outbound.sms.send.assert_not_called()
    (entry_id, at), _ = store.reschedule.call_args
    assert entry_id.endswith(":sms") and at > NOW


def test_one_persons_notifications_are_sent_in_the_order_their_handlers_began(service, store, outbound):
    store.create.side_effect = queued_claimed
    first, second = resubmitted(), resubmitted()
    first_sms, second_sms = (f"{messages.notification_id(e['event_id'], 'u-1')}:sms" for e in (first, second))
    sent = []

    def send(phone, body, reference):
        eventlet.sleep(0.02 if reference == first_sms else 0)  # the provider is slow to take the first
        sent.append(reference)
        return Outcome("accepted", reference="m")

    outbound.sms.send.side_effect = send
    threads = [eventlet.spawn(service.on_case_resubmitted, first)]
    eventlet.sleep(0)  # the first handler is under way
    threads.append(eventlet.spawn(service.on_case_resubmitted, second))
    for thread in threads:
        thread.wait()
    service.sending_now.wait()
    assert sent == [first_sms, second_sms]
    assert service.sending_now.people_waiting() == 0


def test_a_text_the_rate_limit_held_back_is_not_overtaken_by_a_later_one(service, store, outbound):
    # "received" meets the end of a full second; "approved", handed over just after, got the next
    # second's token and went first. Now the person's later sends wait for the timer behind it.
    store.create.side_effect = queued_claimed
    first, second = resubmitted(), resubmitted()
    first_sms, second_sms = (f"{messages.notification_id(e['event_id'], 'u-1')}:sms" for e in (first, second))
    store.take_rate_token.side_effect = [False] + [True] * 10
    gate = eventlet.event.Event()
    outbound.sms.send.return_value = Outcome("accepted", reference="m")
    outbound.email.send.return_value = Outcome("delivered", reference="m")
    original = service._in_order

    def after_the_gate(*args):
        gate.wait()  # both handed over before the person's greenthread starts
        return original(*args)

    service._in_order = after_the_gate
    service.on_case_resubmitted(first)
    service.on_case_resubmitted(second)
    gate.send()
    service.sending_now.wait()
    outbound.sms.send.assert_not_called()
    rescheduled = [(c.args[0], c.args[1]) for c in store.reschedule.call_args_list]
    order = [entry_id for entry_id, _ in sorted(rescheduled, key=lambda r: r[1])]
    assert order.index(first_sms) < order.index(second_sms), rescheduled
    assert all(at <= datetime.now(UTC) + timedelta(seconds=1) for _, at in rescheduled)  # due at once
    assert not service.sending_now.held("u-1")  # over once the person's greenthread is done


def test_in_a_timer_run_a_persons_texts_after_one_held_back_wait_for_the_next_run(service, store, outbound):
    def due(notification_id, recipient):
        return {**entry(), "_id": f"{notification_id}:sms", "notification_id": notification_id, "recipient": recipient}

    store.due.return_value = [due("received-1", "u-1"), due("approved-1", "u-1")]
    store.get.side_effect = lambda notification_id: {**stored(), "_id": notification_id}
    store.take_rate_token.side_effect = [False, True]  # the second's token would have been granted
    outbound.sms.send.return_value = Outcome("accepted", reference="m")
    assert service.deliver_due() == 1
    outbound.sms.send.assert_not_called()
    assert store.take_rate_token.call_count == 1
    # Held back where it was (due already): the next run sends it before "approved-1".
    held = [c.args for c in store.reschedule.call_args_list if c.args[0] == "received-1:sms"]
    assert held == [("received-1:sms", NOW)]


def test_an_inbox_only_notification_queues_nothing_to_send(service, store, outbound):
    store.channels_to_notify.return_value = ["inbox"]
    [payload] = [payload for handler, payload in _every_event() if handler == "on_case_withdrawn"]
    service.on_case_withdrawn(new_event(payload, "intake").model_dump(mode="json"))
    service.sending_now.wait()
    assert store.create.call_args.args[1] == [] and store.create.call_args.kwargs == {}
    outbound.sms.send.assert_not_called()


# --- preferences -------------------------------------------------------------------------------------


def test_preferences_default_to_inbox_and_sms_for_applicants_and_inbox_for_staff(service, store):
    assert service.get_preferences(CITIZEN) == {"channels": ["inbox", "sms"]}
    assert service.get_preferences(REVIEWER) == {"channels": ["inbox"]}


def test_choosing_email_needs_an_address(service, store):
    assert service.set_preferences(CITIZEN, {"channels": ["email"]}) == {"channels": ["inbox", "email"]}
    store.choose_channels.assert_called_once()
    assert store.choose_channels.call_args.args[:2] == ("u-1", ["inbox", "email"])

    answer(service.identity.contact, {"user_id": "u-1", "phone": "13800138000", "email": None})
    with pytest.raises(ValidationFailed) as refused:
        service.set_preferences(CITIZEN, {"channels": ["sms", "email"]})
    # The index is where the caller put it (the inbox, which validation adds, does not shift it).
    assert refused.value.details == [{"field": "channels.1", "issue": "the account has no email address"}]
    with pytest.raises(ValidationFailed) as alone:
        service.set_preferences(CITIZEN, {"channels": ["email"]})
    assert alone.value.details == [{"field": "channels.0", "issue": "the account has no email address"}]


def test_unknown_channels_are_refused(service, store):
    with pytest.raises(ValidationFailed):
        service.set_preferences(CITIZEN, {"channels": ["pigeon"]})
    store.choose_channels.assert_not_called()


def test_a_chosen_set_of_channels_is_used(service, store):
    store.channels_to_notify.return_value = ["inbox", "email"]
    event = new_event(
        CaseResubmitted(**CASE, department_code="620524MZ", applicant_id="u-1", by="u-1", at=NOW), "intake"
    )
    service.on_case_resubmitted(event.model_dump(mode="json"))
    doc, channels, _ = store.create.call_args.args
    assert channels == ["email"]
    assert list(doc["content"]) == ["email"]
    assert doc["title"] == "您的“高龄津贴申领”申请已补正提交"


# --- other events ---------------------------------------------------------------------------------------


def test_an_issued_certificate_is_announced_with_its_name(service, store):
    payload = CertificateIssued(
        certificate_id="business_license:C-1",
        certificate_type="business_license",
        certificate_name="营业执照",
        item_name="企业设立登记",
        case_no="C-1",
        user_id="u-1",
    )
    service.on_certificate_issued(new_event(payload, "identity").model_dump(mode="json"))
    doc = store.create.call_args.args[0]
    assert doc["recipient"] == "u-1" and doc["case_no"] == "C-1"
    assert doc["title"] == "您的电子证照《营业执照》已签发"
    assert "business_license:C-1" in doc["body"]


@pytest.mark.parametrize(
    ("model", "handler"), [(CaseDeadlineWarning, "on_deadline_warning"), (CaseOverdue, "on_overdue")]
)
def test_deadline_events_go_into_each_reviewers_digest_of_the_day(service, store, model, handler):
    answer(service.identity.reviewers_of, ["r-1", "r-2"])
    payload = model(**CASE, department_code="620524MZ", applicant_id="u-1", deadline=date(2026, 11, 27))
    event = new_event(payload, "intake")
    getattr(service, handler)(event.model_dump(mode="json"))
    service.identity.reviewers_of.call_async.assert_called_once_with("620524MZ")
    filed = [c.args for c in store.add_to_digest.call_args_list]
    assert [digest["recipient"] for digest, _, _ in filed] == ["r-1", "r-2"]
    assert {(digest["type"], case_no) for digest, case_no, _ in filed} == {(event.type, payload.case_no)}
    assert filed[0][2] == {"item_name": payload.item_name, "deadline": "2026-11-27"}
    store.create.assert_not_called()  # no notice per case and reviewer


def test_a_digest_lists_its_cases_by_deadline_and_counts_those_it_does_not_show():
    now = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)  # 27 November in China
    doc = messages.digest("case.overdue.v1", "r-1", now, now)
    later = messages.digest("case.overdue.v1", "r-1", now + timedelta(hours=6), now + timedelta(hours=6))
    assert doc["day"] == "2026-11-27" and doc["_id"] == later["_id"]  # one a day
    retried = messages.digest("case.overdue.v1", "r-1", now, now + timedelta(days=1))  # past midnight
    assert retried["_id"] == doc["_id"] and retried["listed_at"] == now  # the day the event happened
    assert doc["_id"] != messages.digest("case.overdue.v1", "r-2", now, now)["_id"]
    assert doc["_id"] != messages.digest("case.deadline_warning.v1", "r-1", now, now)["_id"]
    doc["cases"] = {
        f"C-{n:03d}": messages.digest_entry("高龄津贴申领", date(2026, 11, 26) - timedelta(days=n % 3))
        for n in range(messages.DIGEST_SHOWN + 5)
    }
    shown = messages.view(doc)
    assert shown["title"] == f"2026年11月27日：{messages.DIGEST_SHOWN + 5} 件办件已超期"
    lines = shown["body"].splitlines()
    assert lines[0].startswith("“高龄津贴申领”办件（编号 C-002）的办理时限2026年11月24日已过")  # earliest first
    assert sum("编号" in line for line in lines) == messages.DIGEST_SHOWN
    assert "另有 5 件" in shown["body"] and shown["case_no"] is None
    assert shown["deliveries"] == [{"channel": "inbox", "status": "delivered"}]
    NotificationView.model_validate({**shown, "created_at": now})


def test_a_vanished_account_fails_the_delivery_for_good(service, store, outbound):
    answer(service.identity.contact, error=NotFound("no such user"))
    store.due.return_value = [entry()]
    store.get.return_value = stored()
    service.deliver_due()
    assert store.update_channel.call_args.args[2]["status"] == "failed"


def _every_event():
    from contracts.cases import Decision
    from contracts.events import (
        CaseAccepted,
        CaseApproved,
        CaseRejected,
        CaseSubmitted,
        CaseSupplementRequested,
        CaseWithdrawn,
    )

    common = {**CASE, "department_code": "620524MZ", "applicant_id": "u-1"}
    move = {**common, "by": "r-1", "at": NOW}
    decision = Decision(outcome="approved", decided_by="auto", decided_at=NOW)
    refusal = Decision(outcome="rejected", decided_by="r-1", reason="材料不全", decided_at=NOW)
    return [
        ("on_case_submitted", CaseSubmitted(**common, item_version=1, form={}, material_codes=[], submitted_at=NOW)),
        ("on_case_accepted", CaseAccepted(**move, deadline=date(2026, 12, 3))),
        (
            "on_supplement_requested",
            CaseSupplementRequested(**move, missing_materials=[{"code": "a", "name": "身份证"}]),
        ),
        ("on_case_resubmitted", CaseResubmitted(**move)),
        ("on_case_withdrawn", CaseWithdrawn(**move)),
        ("on_case_approved", CaseApproved(**common, decision=decision)),
        ("on_case_rejected", CaseRejected(**common, decision=refusal)),
        (
            "on_certificate_issued",
            CertificateIssued(certificate_id="x:C", certificate_type="x", case_no="C", user_id="u-1"),
        ),
    ]


@pytest.mark.parametrize(("handler", "payload"), _every_event(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_event_renders_on_every_channel_from_its_own_templates(service, store, handler, payload):
    answer(service.identity.reviewers_of, ["r-1"])
    store.channels_to_notify.return_value = ["inbox", "sms", "email"]
    event = new_event(payload, "intake")
    getattr(service, handler)(event.model_dump(mode="json"))
    doc, channels, _ = store.create.call_args.args
    assert channels == ["sms", "email"]
    assert doc["title"] and doc["body"]
    sms, email = doc["content"]["sms"], doc["content"]["email"]
    assert sms["body"].startswith("【一网通办】") and "\n" not in sms["body"]
    assert email["title"] == doc["title"] and doc["body"] in email["body"]
    for channel in ("inbox", "sms", "email"):
        assert doc["channels"][channel]["template"] == (
            f"{channel}/{event.type}@{messages.template_version(channel, event.type)}"
        )


def test_due_deliveries_are_sent_several_at_a_time_but_no_more_than_the_bound(service, store, outbound):
    entries = [{**entry(), "_id": f"n{i}:sms", "notification_id": f"n{i}", "recipient": f"u-{i}"} for i in range(25)]
    store.due.return_value = entries
    store.get.side_effect = lambda notification_id: {**stored(), "_id": notification_id}
    store.claim.side_effect = lambda entry_id, now, lease: None if entry_id == "n3:sms" else {}  # n3 is taken
    in_flight, most = [0], [0]

    def send(phone, body, reference):
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        eventlet.sleep(0.01)  # the provider answering
        in_flight[0] -= 1
        return Outcome("accepted", reference=f"m-{reference}")

    outbound.sms.send.side_effect = send
    assert service.deliver_due() == 24
    assert most[0] == outbound.concurrency > 1
    assert outbound.sms.send.call_count == 24


def test_a_persons_deliveries_go_out_in_order_while_other_peoples_go_alongside(service, store, outbound):
    def due(notification_id, recipient):
        return {**entry(), "_id": f"{notification_id}:sms", "notification_id": notification_id, "recipient": recipient}

    store.due.return_value = [due("received-1", "u-1"), due("received-2", "u-2"), due("approved-1", "u-1")]
    store.get.side_effect = lambda notification_id: {**stored(), "_id": notification_id}
    sent = []

    def send(phone, body, reference):
        eventlet.sleep(0.02 if reference == "received-1:sms" else 0.001)  # u-1's first message is slow
        sent.append(reference)
        return Outcome("accepted", reference="m")

    outbound.sms.send.side_effect = send
    assert service.deliver_due() == 3
    assert sent == ["received-2:sms", "received-1:sms", "approved-1:sms"]


def test_a_failed_delivery_is_logged_and_the_others_go_on(service, store, outbound, caplog):
    entries = [{**entry(), "_id": f"n{i}:sms", "notification_id": f"n{i}"} for i in range(3)]
    store.due.return_value = entries

    def get(notification_id):
        if notification_id == "n1":
            raise ConnectionError("store gone")
        return {**stored(), "_id": notification_id}

    store.get.side_effect = get
    outbound.sms.send.return_value = Outcome("accepted", reference="m")
    assert service.deliver_due() == 2
    assert outbound.sms.send.call_count == 2
    assert "delivery attempt failed" in caplog.text


def test_a_rate_counter_two_senders_create_at_once_is_counted_again():
    store = NotificationStore(MagicMock())
    store.rates = MagicMock()
    store.rates.find_one_and_update.side_effect = [DuplicateKeyError("E11000"), {"n": RATE_BLOCK}]
    assert store.take_rate_token("sms", NOW, 5)
    assert store.rates.find_one_and_update.call_count == 2
    store.rates.find_one_and_update.side_effect = DuplicateKeyError("E11000")
    later = NOW + timedelta(seconds=1)  # the block counted above was for NOW's second only
    assert not store.take_rate_token("sms", later, 5)  # still racing: this send waits for the next second


def test_a_block_of_sends_is_counted_at_once_and_only_what_fits_under_the_limit_is_granted():
    store = NotificationStore(MagicMock())
    store.rates = MagicMock()
    counters: dict[str, int] = {}  # a counter per channel and second, as stored

    def count(query, update, **_):
        counters[query["_id"]] = counters.get(query["_id"], 0) + update["$inc"]["n"]
        return {"n": counters[query["_id"]]}

    store.rates.find_one_and_update.side_effect = count
    granted = [store.take_rate_token("sms", NOW, 6) for _ in range(10)]
    assert granted == [True] * 6 + [False] * 4
    # 4 counted at once, then 2 of the next 4 fit; then every try is refused with a count.
    assert store.rates.find_one_and_update.call_count == 2 + 4
    assert store.take_rate_token("sms", NOW + timedelta(seconds=1), 6)  # a new second, a new block


def test_a_persons_second_sms_does_not_ask_identity_again(service, store, outbound):
    # A 秒批 case's "received" and "approved" go out within a second of each other.
    outbound.sms.send.return_value = Outcome("accepted", reference="m-1")
    store.get.return_value = stored()
    for _ in range(2):
        store.due.return_value = [entry()]
        service.deliver_due()
    assert outbound.sms.send.call_count == 2
    assert service.identity.contact.call_async.call_count == 1


# --- one-time codes: sent now, never stored -----------------------------------------------------------


def code_text(**overrides):
    return {
        "phone": "13911112222",
        "code": "480213",
        "purpose": "phone_change",
        "valid_minutes": 5,
        "reference": "phone-code:u-1:1",
        "not_after": (datetime.now(UTC) + timedelta(seconds=5)).isoformat(),
        **overrides,
    }


def test_a_verification_code_is_texted_at_once_and_not_stored(service, store, outbound):
    outbound.sms.send.return_value = Outcome("accepted", reference="m-1")
    assert service.send_verification_code(code_text()) is None
    to, text, reference = outbound.sms.send.call_args.args
    assert (to, reference) == ("13911112222", "phone-code:u-1:1")
    assert "480213" in text and "5分钟" in text and text.startswith("【一网通办】") and "更换" in text
    assert 0 < outbound.sms.send.call_args.kwargs["timeout"] <= 5  # no longer than the asker waits
    store.take_rate_token.assert_called_once()
    assert not [c for c in store.method_calls if c[0] not in ("take_rate_token",)]  # nothing kept


def test_a_reset_code_says_what_it_is_for(service, outbound):
    outbound.sms.send.return_value = Outcome("accepted", reference="m-1")
    service.send_verification_code(code_text(purpose="password_reset"))
    assert "重置登录密码" in outbound.sms.send.call_args.args[1]


def test_a_verification_code_the_provider_cannot_take_is_unavailable_or_a_refused_phone(service, outbound):
    outbound.sms.send.return_value = Outcome("temporary", error="SMS provider answered 503")
    with pytest.raises(Unavailable):
        service.send_verification_code(code_text())
    outbound.sms.send.return_value = Outcome("permanent", error="SMS provider refused: 400")
    with pytest.raises(ValidationFailed) as info:
        service.send_verification_code(code_text())
    assert info.value.details[0]["field"] == "phone"


def test_a_verification_code_past_its_deadline_is_not_sent(service, store, outbound):
    late = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()  # identity gave up on it
    with pytest.raises(Unavailable):
        service.send_verification_code(code_text(not_after=late))
    outbound.sms.send.assert_not_called()
    # Nor does it take a token of the SMS rate limit, which case texts need (a stale backlog).
    store.take_rate_token.assert_not_called()


def test_a_verification_code_waits_for_the_rate_limit_until_its_deadline(service, store, outbound, monkeypatch):
    naps = []
    monkeypatch.setattr(eventlet, "sleep", naps.append)
    store.take_rate_token.side_effect = [False, False, True]
    outbound.sms.send.return_value = Outcome("accepted", reference="m-1")
    service.send_verification_code(code_text())
    assert store.take_rate_token.call_count == 3 and naps == [0.25, 0.25]

    store.take_rate_token.side_effect = None
    store.take_rate_token.return_value = False
    outbound.sms.send.reset_mock()
    soon = (datetime.now(UTC) + timedelta(seconds=0.1)).isoformat()  # no time for another try
    with pytest.raises(Unavailable):
        service.send_verification_code(code_text(not_after=soon))
    outbound.sms.send.assert_not_called()


@pytest.mark.parametrize("bad", [{"code": "12345"}, {"purpose": "login"}, {"phone": "1234"}, {"not_after": None}])
def test_a_malformed_verification_text_is_refused(service, outbound, bad):
    with pytest.raises(ValidationFailed):
        service.send_verification_code(code_text(**bad))
    outbound.sms.send.assert_not_called()


def test_a_security_notice_tells_the_old_number_at_once(service, store, outbound):
    outbound.sms.send.return_value = Outcome("accepted", reference="m-1")
    notice = {
        "phone": "13800138000",
        "kind": "phone_changed",
        "at": "2026-11-27T02:30:00+00:00",
        "new_phone_masked": "139****2222",
        "reference": "phone_changed:u-1:1",
    }
    service.send_security_notice(notice)
    to, text, reference = outbound.sms.send.call_args.args
    assert (to, reference) == ("13800138000", "phone_changed:u-1:1")
    assert "139****2222" in text and "2026年11月27日 10:30" in text and "12345" in text
    outbound.sms.send.return_value = Outcome("temporary", error="SMS provider answered 503")
    with pytest.raises(Unavailable):
        service.send_security_notice(notice)
    with pytest.raises(ValidationFailed):
        service.send_security_notice({**notice, "new_phone_masked": "13911112222"})  # never the whole number
