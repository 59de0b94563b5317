"""Microsoft.EventGrid system topics and their event subscriptions, in the local Azure.

A WebHook subscription is validated when it is created and whenever it is updated, as
Event Grid does ("Endpoint validation with Event Grid events"): a
Microsoft.EventGrid.SubscriptionValidationEvent is POSTed to the endpoint, which must
answer 200 with ``{"validationResponse": <code>}`` within ``Options.handshake_seconds``
(30 s on Azure); otherwise the subscription is refused with Azure's "Url validation" error
and the deployment fails (Azure/azure-cli#21006 shows the message).

Then the topic's storage account (Azurite) is looked at every ``Options.event_poll``
seconds and a Microsoft.Storage.BlobCreated event is delivered for each blob that was not
there before, filtered as the subscription says (includedEventTypes, subjectBeginsWith,
subjectEndsWith, advancedFilters StringIn/StringNotIn on ``data.api``), at most
``maxEventsPerBatch`` per POST. A delivery that fails is retried with back-off (10 s,
doubling, up to 5 min); 400, 401, 403 and 413 are not retried, as Event Grid does not.
What the local Azure decides where Azurite cannot tell: every blob's ``data.api`` is
PutBlob (Azurite does not say how a blob was written).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from typing import Any

import requests

from scorer.twin.arm_common import ArmError, now_iso

NOT_RETRIED = {400, 401, 403, 413}


def deliver(url: str, events: list[dict], cafile: str, stopping: threading.Event, attempts: int = 30) -> bool:
    """POST a batch of events to a WebHook as Event Grid does: retried after 10 s, doubling up
    to 5 minutes, at most ``attempts`` times, not after 400, 401, 403 or 413 (Event Grid's
    "Delivery and retry"). True when the endpoint took them. Shared by the local Azure's
    subscriptions and the twin's watcher (scorer.twin.local)."""
    delay = 10.0
    for _ in range(attempts):
        try:
            resp = requests.post(url, data=json.dumps(events), timeout=30, verify=cafile,
                                 headers={"aeg-event-type": "Notification", "Content-Type": "application/json"})
            if resp.status_code < 300:
                return True
            if resp.status_code in NOT_RETRIED:
                return False
        except requests.RequestException:
            pass
        if stopping.wait(delay):
            return False
        delay = min(delay * 2, 300.0)
    return False


def blob_created(topic: str, blob_endpoint: str, container: str, name: str, etag: str) -> dict:
    """Event Grid's Microsoft.Storage.BlobCreated event for one blob (EventGridSchema)."""
    return {"id": str(uuid.uuid4()), "topic": topic,
            "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
            "eventType": "Microsoft.Storage.BlobCreated", "eventTime": now_iso(), "dataVersion": "",
            "metadataVersion": "1",
            "data": {"api": "PutBlob", "clientRequestId": str(uuid.uuid4()), "requestId": str(uuid.uuid4()),
                     "eTag": etag, "contentType": "application/octet-stream", "blobType": "BlockBlob",
                     "url": f"{blob_endpoint}{container}/{name}", "sequencer": f"{time.time_ns():032x}",
                     "storageDiagnostics": {"batchId": str(uuid.uuid4())}}}


class EventGrid:
    def __init__(self, types: Any):
        self.types = types
        self.azure = types.azure
        self.deliveries: dict[str, "_Delivery"] = {}
        self.handshakes: list[tuple[str, int | None, float]] = []   # (endpoint, status, seconds), for tests

    def topic(self, view: dict, existing: dict | None) -> None:
        props = view["properties"]
        source = self.azure.find(str(props.get("source", "")))
        if source is None:
            raise ArmError(400, "InvalidRequest", f"The source '{props.get('source')}' of the system topic does "
                           "not exist.")
        if props.get("topicType") != "Microsoft.Storage.StorageAccounts":
            raise ArmError(400, "InvalidRequest", f"The topic type '{props.get('topicType')}' is not one the local "
                           "Azure serves (Microsoft.Storage.StorageAccounts).")
        props["metricResourceId"] = str(uuid.uuid4())

    def subscription(self, view: dict, existing: dict | None) -> None:
        """Validate the endpoint (create and update alike), then deliver."""
        props = view["properties"]
        destination = props.get("destination") or {}
        if destination.get("endpointType") != "WebHook":
            raise ArmError(400, "InvalidRequest", "The local Azure delivers to WebHook endpoints only.")
        endpoint = str((destination.get("properties") or {}).get("endpointUrl", ""))
        try:
            self._handshake(endpoint)
        except ArmError:
            with self.azure.lock:
                self.azure.resources.pop(view["id"].lower(), None)
            raise
        props["destination"]["properties"] = {k: v for k, v in destination["properties"].items()
                                              if k != "endpointUrl"}
        props["destination"]["properties"]["endpointBaseUrl"] = endpoint.partition("?")[0]
        old = self.deliveries.pop(view["id"].lower(), None)
        if old is not None:
            old.stop()
        topic = self.azure.find(view["id"].rpartition("/eventSubscriptions/")[0])
        # an update goes on from what the subscription had seen: a blob created meanwhile still gets its event
        self.deliveries[view["id"].lower()] = _Delivery(self, topic, props, endpoint, old.seen if old else None)

    def _handshake(self, endpoint: str) -> None:
        code = secrets.token_hex(16)
        event = [{"id": str(uuid.uuid4()), "topic": "", "subject": "", "data": {"validationCode": code,
                  "validationUrl": f"{self.azure.url}local/eventgrid/validate?code={code}"},
                  "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime": now_iso(),
                  "metadataVersion": "1", "dataVersion": "2"}]
        started = time.monotonic()
        status: int | None = None
        reason = "Unknown"
        try:
            resp = requests.post(endpoint, json=event, timeout=self.types.options.handshake_seconds,
                                 headers={"aeg-event-type": "SubscriptionValidation"}, verify=str(self.azure.cert))
            status = resp.status_code
            answered = resp.json() if resp.content else None
            if status == 200 and isinstance(answered, dict) and answered.get("validationResponse") == code:
                self.handshakes.append((endpoint, status, time.monotonic() - started))
                return
            reason = str(status)
        except requests.Timeout:
            reason = "Unknown (no answer within {:g} s)".format(self.types.options.handshake_seconds)
        except (requests.RequestException, ValueError) as exc:
            reason = f"Unknown ({type(exc).__name__})"
        self.handshakes.append((endpoint, status, time.monotonic() - started))
        raise ArmError(400, "Url validation", f"Webhook validation handshake failed for {endpoint.partition('?')[0]}. "
                       f"Http POST request failed with response code {reason}. For troubleshooting, visit "
                       "https://aka.ms/esvalidation.")

    def removed(self, view: dict) -> None:
        old = self.deliveries.pop(view["id"].lower(), None)
        if old is not None:
            old.stop()

    def close(self) -> None:
        for d in self.deliveries.values():
            d.stop()


class _Delivery:
    """Looks at the account for new blobs and delivers their BlobCreated events."""

    def __init__(self, grid: EventGrid, topic: dict | None, props: dict, endpoint: str,
                 seen: set[tuple[str, str, str]] | None = None):
        self.grid = grid
        self.topic_source = (topic or {}).get("properties", {}).get("source", "")
        self.filter = props.get("filter") or {}
        self.batch = int((props.get("destination", {}).get("properties") or {}).get("maxEventsPerBatch") or 1)
        self.endpoint = endpoint
        self.stopping = threading.Event()
        self.delivered: list[dict] = []
        self.seen = self._blobs() if seen is None else seen
        threading.Thread(target=self._watch, daemon=True, name="eventgrid").start()

    def _blobs(self) -> set[tuple[str, str, str]]:
        service = self.grid.types.storage.service()
        out = set()
        for c in service.list_containers():
            if c.name.startswith("acr-build-"):
                continue
            for b in service.get_container_client(c.name).list_blobs():
                out.add((c.name, b.name, (b.etag or "").strip('"')))
        return out

    def _watch(self) -> None:
        while not self.stopping.wait(self.grid.types.options.event_poll):
            try:
                now = self._blobs()
            except Exception:  # Azurite not answering: look again next time
                continue
            new = sorted(now - self.seen)
            self.seen = now
            events = [e for e in (self._event(*b) for b in new) if self._passes(e)]
            for i in range(0, len(events), self.batch):
                threading.Thread(target=self._deliver, args=(events[i:i + self.batch],), daemon=True,
                                 name="eventgrid-delivery").start()

    def _event(self, container: str, name: str, etag: str) -> dict:
        return blob_created(self.topic_source, self.grid.types.storage.endpoint(), container, name, etag)

    def _passes(self, event: dict) -> bool:
        f = self.filter
        types = f.get("includedEventTypes")
        if types and event["eventType"] not in types:
            return False
        if f.get("subjectBeginsWith") and not event["subject"].startswith(f["subjectBeginsWith"]):
            return False
        if f.get("subjectEndsWith") and not event["subject"].endswith(f["subjectEndsWith"]):
            return False
        for adv in f.get("advancedFilters") or []:
            value = event
            for part in str(adv.get("key", "")).split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if adv.get("operatorType") == "StringIn" and value not in adv.get("values", []):
                return False
            if adv.get("operatorType") == "StringNotIn" and value in adv.get("values", []):
                return False
        return True

    def _deliver(self, events: list[dict]) -> None:
        if deliver(self.endpoint, events, str(self.grid.azure.cert), self.stopping):
            self.delivered += events

    def stop(self) -> None:
        self.stopping.set()
