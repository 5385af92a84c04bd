"""Sends handed over by handlers: bounded per process, one person's in order, nothing left held."""

import eventlet
import pytest

from services.notification.sending_now import SendingNow


def test_sends_beyond_the_bound_are_left_to_the_timer_until_a_slot_frees():
    sending = SendingNow(2)
    release = eventlet.event.Event()
    granted = []
    for person in ("a", "b", "c"):
        with sending.turn(person) as turn:
            granted.append(turn.may_send)
            if turn.may_send:
                turn.send(release.wait)
    assert granted == [True, True, False]
    release.send()
    sending.wait()
    with sending.turn("c") as turn:
        assert turn.may_send  # both slots are free again
    assert sending.people_waiting() == 0


def test_a_persons_next_turn_waits_for_their_send_in_flight_but_others_do_not():
    sending = SendingNow(4)
    order = []

    def slow_send():
        eventlet.sleep(0.02)
        order.append("a: first sent")

    with sending.turn("a") as turn:
        turn.send(slow_send)

    def next_turn(person):
        with sending.turn(person):
            order.append(f"{person}: next turn")

    threads = [eventlet.spawn(next_turn, "a"), eventlet.spawn(next_turn, "b")]
    for thread in threads:
        thread.wait()
    assert order == ["b: next turn", "a: first sent", "a: next turn"]
    assert sending.people_waiting() == 0


def test_a_failing_block_or_send_gives_back_the_turn_and_the_slot(caplog):
    sending = SendingNow(1)
    with pytest.raises(ConnectionError), sending.turn("a"):
        raise ConnectionError("store gone")
    with sending.turn("a") as turn:
        turn.send(lambda: 1 / 0)
    sending.wait()
    assert "delivery attempt failed" in caplog.text
    with sending.turn("a") as turn:
        assert turn.may_send
    assert sending.people_waiting() == 0


def test_a_turn_without_a_slot_cannot_hand_over_a_send():
    with SendingNow(0).turn("a") as turn, pytest.raises(RuntimeError):
        turn.send(lambda: None)
