"""Sends handed over by handlers: bounded per process, one person's in order, none waited for by a
handler, nothing left held."""

import eventlet
import pytest
from eventlet.event import Event

from services.notification.sending_now import SendingNow


def test_sends_beyond_the_bound_are_left_to_the_timer_until_a_slot_frees():
    sending = SendingNow(2)
    release = Event()
    free = []
    for person in ("a", "b", "c"):
        with sending.slot(person) as slot:
            free.append(slot.free)
            if slot.free:
                slot.send(release.wait)
    assert free == [True, True, False]
    assert sending.in_flight() == 2
    release.send()
    sending.wait()
    assert sending.in_flight() == 0
    with sending.slot("c") as slot:
        assert slot.free  # both slots are free again
    assert sending.people_waiting() == 0


def test_a_slot_not_used_is_given_back():
    sending = SendingNow(1)
    with sending.slot("a") as slot:
        assert slot.free  # a redelivered event: nothing new to send
    with pytest.raises(ConnectionError), sending.slot("a"):
        raise ConnectionError("store gone")  # the handler failed before handing anything over
    assert sending.in_flight() == 0


def test_a_persons_sends_go_in_the_order_handed_over_and_no_handler_waits_for_them():
    sending = SendingNow(4)
    order = []

    def send(what, seconds=0.0):
        def work():
            eventlet.sleep(seconds)
            order.append(what)

        return work

    for person, what, seconds in (("a", "a: received", 0.02), ("a", "a: approved", 0), ("b", "b: received", 0)):
        with sending.slot(person) as slot:
            slot.send(send(what, seconds))
        order.append(f"{what} handed over")  # at once: the handler goes on
    sending.wait()
    assert order == [
        "a: received handed over",
        "a: approved handed over",
        "b: received handed over",
        "b: received",
        "a: received",
        "a: approved",
    ]
    assert sending.people_waiting() == 0 and sending.in_flight() == 0


def test_a_failing_send_is_logged_and_the_persons_next_still_goes(caplog):
    sending = SendingNow(2)
    sent = []
    for work in (lambda: 1 / 0, lambda: sent.append("next")):
        with sending.slot("a") as slot:
            slot.send(work)
    sending.wait()
    assert "delivery attempt failed" in caplog.text
    assert sent == ["next"] and sending.in_flight() == 0


def test_a_kill_leaves_nothing_held():
    sending = SendingNow(3)
    for person in ("a", "a", "b"):  # a's second waits behind a's first
        with sending.slot(person) as slot:
            slot.send(lambda: eventlet.sleep(10))
    eventlet.sleep(0)  # a's first and b's under way
    assert (sending.in_flight(), sending.people_waiting()) == (3, 2)
    sending.kill()
    assert (sending.in_flight(), sending.people_waiting()) == (0, 0)
    sending.wait()  # nothing left to wait for


def test_a_slot_that_was_not_free_cannot_hand_over_a_send():
    with SendingNow(0).slot("a") as slot, pytest.raises(RuntimeError):
        slot.send(lambda: None)
