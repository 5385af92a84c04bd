"""Approval service entrypoints: decide submitted cases by their item's rules (秒批)."""

from __future__ import annotations

import logging

from nameko.timer import timer

from contracts.envelope import Envelope, new_event
from contracts.events import CaseSubmitted
from contracts.identity import ApplicantProfile
from services.approval import deciding
from services.approval.storage import ApprovalStore
from services.common.consuming import Delivery, consumes
from services.common.heap import FrozenStartupHeap
from services.common.item_versions import ItemVersions
from services.common.metrics import Metrics
from services.common.mongo import Storage
from services.common.publishing import EventPublisher
from services.common.rpc import ServiceRpc, call, rpc
from services.common.telemetry import Tracing, annotate

log = logging.getLogger(__name__)


class ApprovalService:
    name = "approval"

    tracing = Tracing()
    metrics = Metrics()
    startup_heap = FrozenStartupHeap()
    store: ApprovalStore = Storage(ApprovalStore)
    events = EventPublisher()
    catalog = ServiceRpc("catalog")
    item_versions = ItemVersions()
    identity = ServiceRpc("identity")
    delivery = Delivery()

    @consumes("intake", CaseSubmitted)
    def on_case_submitted(self, envelope: Envelope, submitted: CaseSubmitted) -> None:
        annotate(case_no=submitted.case_no, item_code=submitted.item_code, event_id=envelope.event_id)
        # A redelivery decides again, and `record` finds the decision stored (the relay publishes
        # its event): cheaper than asking the store first for every case, which is never redelivered.
        # The rules of the version the case was submitted under, not today's.
        try:
            outcome = self._decide(submitted)
        except Exception as exc:
            # On its last try whatever the clocks say (a retry span shorter than the hand-over's).
            if not (self.delivery.last or deciding.time_to_hand_over(envelope.occurred_at)):
                raise  # retried: a catalog or identity restarting is waited out
            log.error("the rules of %s could not be run; a reviewer decides", submitted.case_no, exc_info=True)
            outcome = deciding.rules_not_run(submitted, exc)
        event = new_event(outcome, producer=self.name)
        annotate(outcome=outcome.event_type)
        if self.store.record(submitted.case_no, envelope.event_id, outcome.model_dump(mode="json"), event):
            self.events.publish(self.store.outbox, submitted.case_no, [event])

    def _decide(self, submitted: CaseSubmitted) -> deciding.Outcome:
        code, version = submitted.item_code, submitted.item_version
        item = self.item_versions.get(code, version, lambda: call(self.catalog.get_item, code, version))
        # As at submission, from the event; asked of identity only for an older producer's event.
        profile = submitted.applicant or ApplicantProfile.model_validate(
            call(self.identity.applicant_profile, submitted.applicant_id)
        )
        return deciding.decide(item, profile, submitted)

    @rpc
    def ping(self) -> str:
        self.store.has_decided("ping")
        return "pong"

    @timer(interval=2)
    def relay_outbox(self) -> None:
        self.events.relay(self.store.outbox)
