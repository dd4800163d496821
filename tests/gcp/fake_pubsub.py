"""A local Pub/Sub: a real gRPC server speaking `google.pubsub.v1` (Publisher and Subscriber, the methods jitgate
and its tests use) with the real proto types, and the REST `topics.publish` method Cloud Tasks calls.

What it reproduces, from the API reference (pubsub.googleapis.com, google/pubsub/v1/pubsub.proto):

- CreateTopic / CreateSubscription: ALREADY_EXISTS, NOT_FOUND for a missing topic or dead-letter topic;
  `ack_deadline_seconds` 10..600 (0 means 10); `dead_letter_policy.max_delivery_attempts` 5..100 (0 means 5).
- Publish: NOT_FOUND for a missing topic; INVALID_ARGUMENT for no messages, a message with neither data nor
  attributes, an attribute key over 256 bytes or starting with `goog`, a value over 1024 bytes. Message ids are
  server-assigned decimal strings.
- Pull: INVALID_ARGUMENT when max_messages < 1; a message is leased for the ack deadline under a fresh ack id;
  with a dead-letter policy `delivery_attempt` counts deliveries (a nack and an expired lease each count one),
  and a message already delivered `max_delivery_attempts` times is forwarded to the dead-letter topic instead of
  delivered, with the documented `CloudPubSubDeadLetterSource*` attributes.
- Acknowledge / ModifyAckDeadline (0..600 s; 0 is a nack): on a subscription with exactly-once delivery an ack id
  that is expired, already acknowledged or unknown fails with INVALID_ARGUMENT and a `google.rpc.ErrorInfo` whose
  metadata maps it to `PERMANENT_FAILURE_INVALID_ACK_ID` (what the client library reads). Without exactly-once the
  service drops such acks silently, and so does this fake.

Delivery order is publish order (the service promises none without ordering keys; jitgate relies on none).
Time is the given clock's, so the contract suite can move it. `before_pull` runs before every Pull: the Cloud
Tasks fake dispatches due tasks there, as the real dispatcher would have done by then.
"""

from __future__ import annotations

import base64
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf import any_pb2, empty_pb2
from google.pubsub_v1.types import (
    AcknowledgeRequest,
    ModifyAckDeadlineRequest,
    PublishRequest,
    PublishResponse,
    PubsubMessage,
    PullRequest,
    PullResponse,
    ReceivedMessage,
    Subscription,
    Topic,
)
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from shared.ports import Clock
from tests.azure.fake_http import Call, FakeHttpService, Reply

DEFAULT_ACK_DEADLINE = 10
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5


class Refused(Exception):
    """An RPC error: a gRPC status code, a message and optional rich details."""

    def __init__(self, code: grpc.StatusCode, message: str, details: list[Any] | None = None) -> None:
        self.code, self.message, self.details = code, message, details or []
        super().__init__(message)


@dataclass
class _Lease:
    ack_id: str
    until: datetime


@dataclass
class _Entry:
    message: PubsubMessage
    attempts: int = 0
    lease: _Lease | None = None


@dataclass
class _Subscription:
    proto: Subscription
    entries: list[_Entry] = field(default_factory=list)


class FakePubSub:
    """The service's state and methods; `serve()` puts it on a local gRPC port and a local HTTP port."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.topics: dict[str, Topic] = {}
        self.subscriptions: dict[str, _Subscription] = {}
        self.before_pull: Callable[[], None] = lambda: None
        self.calls: list[str] = []
        self._ids = itertools.count(1_000_001)
        self._lock = threading.RLock()
        self._server: grpc.Server | None = None
        self._rest: _RestPublish | None = None
        self.port = 0

    # ------------------------------------------------------------ admin

    def create_topic(self, topic: Topic) -> Topic:
        with self._lock:
            if topic.name in self.topics:
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"Topic already exists: {topic.name}")
            self.topics[topic.name] = topic
            return topic

    def create_subscription(self, subscription: Subscription) -> Subscription:
        with self._lock:
            if subscription.name in self.subscriptions:
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"Subscription already exists: {subscription.name}")
            if subscription.topic not in self.topics:
                raise Refused(grpc.StatusCode.NOT_FOUND, f"Topic not found: {subscription.topic}")
            deadline = subscription.ack_deadline_seconds or DEFAULT_ACK_DEADLINE
            if not 10 <= deadline <= 600:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              "ack_deadline_seconds must be between 10 and 600 seconds")
            subscription.ack_deadline_seconds = deadline
            policy = subscription.dead_letter_policy
            if policy.dead_letter_topic:
                if policy.dead_letter_topic not in self.topics:
                    raise Refused(grpc.StatusCode.NOT_FOUND, f"Dead letter topic not found: {policy.dead_letter_topic}")
                attempts = policy.max_delivery_attempts or DEFAULT_MAX_DELIVERY_ATTEMPTS
                if not 5 <= attempts <= 100:
                    raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                                  "max_delivery_attempts must be between 5 and 100")
                policy.max_delivery_attempts = attempts
            self.subscriptions[subscription.name] = _Subscription(subscription)
            return subscription

    # ------------------------------------------------------------ Publisher

    def publish(self, request: PublishRequest) -> PublishResponse:
        with self._lock:
            self.calls.append("Publish")
            if request.topic not in self.topics:
                raise Refused(grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            if not request.messages:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "The request contains no messages")
            for message in request.messages:
                _check_message(message)
            return PublishResponse(message_ids=[self._deliver(request.topic, m) for m in request.messages])

    def _deliver(self, topic: str, message: PubsubMessage) -> str:
        stored = PubsubMessage(data=message.data, attributes=dict(message.attributes),
                               ordering_key=message.ordering_key)
        stored.message_id = str(next(self._ids))
        stored.publish_time = self.clock.now()
        for sub in self.subscriptions.values():
            if sub.proto.topic == topic:
                sub.entries.append(_Entry(PubsubMessage(stored)))
        return stored.message_id

    # ------------------------------------------------------------ Subscriber

    def pull(self, request: PullRequest) -> PullResponse:
        self.before_pull()
        with self._lock:
            self.calls.append("Pull")
            sub = self._subscription(request.subscription)
            if request.max_messages < 1:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "max_messages must be greater than 0")
            now = self.clock.now()
            policy = sub.proto.dead_letter_policy
            out: list[ReceivedMessage] = []
            for entry in list(sub.entries):
                if len(out) >= request.max_messages:
                    break
                if entry.lease is not None and entry.lease.until > now:
                    continue
                entry.lease = None
                if policy.dead_letter_topic and entry.attempts >= policy.max_delivery_attempts:
                    self._forward_to_dead_letter(sub, entry)
                    continue
                entry.attempts += 1
                entry.lease = _Lease(f"ack-{uuid.uuid4().hex}", now + timedelta(seconds=sub.proto.ack_deadline_seconds))
                out.append(ReceivedMessage(
                    ack_id=entry.lease.ack_id, message=entry.message,
                    delivery_attempt=entry.attempts if policy.dead_letter_topic else 0,
                ))
            return PullResponse(received_messages=out)

    def _forward_to_dead_letter(self, sub: _Subscription, entry: _Entry) -> None:
        sub.entries.remove(entry)
        name = sub.proto.name
        attributes = {
            **entry.message.attributes,
            "CloudPubSubDeadLetterSourceDeliveryCount": str(entry.attempts),
            "CloudPubSubDeadLetterSourceSubscription": name.rsplit("/", 1)[-1],
            "CloudPubSubDeadLetterSourceSubscriptionProject": name.split("/")[1],
            "CloudPubSubDeadLetterSourceTopicPublishTime": entry.message.publish_time.isoformat(),
        }
        self._deliver(sub.proto.dead_letter_policy.dead_letter_topic,
                      PubsubMessage(data=entry.message.data, attributes=attributes))

    def acknowledge(self, request: AcknowledgeRequest) -> None:
        with self._lock:
            self.calls.append("Acknowledge")
            sub = self._subscription(request.subscription)
            if not request.ack_ids:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "No ack ids specified")
            found = self._leased(sub, request.ack_ids)
            for entry in found.values():
                sub.entries.remove(entry)

    def modify_ack_deadline(self, request: ModifyAckDeadlineRequest) -> None:
        with self._lock:
            self.calls.append("ModifyAckDeadline")
            sub = self._subscription(request.subscription)
            if not 0 <= request.ack_deadline_seconds <= 600:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "ack_deadline_seconds must be between 0 and 600")
            now = self.clock.now()
            for entry in self._leased(sub, request.ack_ids).values():
                assert entry.lease is not None
                if request.ack_deadline_seconds == 0:
                    entry.lease = None
                else:
                    entry.lease.until = now + timedelta(seconds=request.ack_deadline_seconds)

    def _leased(self, sub: _Subscription, ack_ids: Any) -> dict[str, _Entry]:
        """The entries still leased under these ack ids; the invalid ones refused as exactly-once does."""
        now = self.clock.now()
        by_id = {e.lease.ack_id: e for e in sub.entries if e.lease is not None and e.lease.until > now}
        invalid = [a for a in ack_ids if a not in by_id]
        if invalid and sub.proto.enable_exactly_once_delivery:
            info = error_details_pb2.ErrorInfo(
                reason="EXACTLY_ONCE_ACKID_FAILURE", domain="pubsub.googleapis.com",
                metadata=dict.fromkeys(invalid, "PERMANENT_FAILURE_INVALID_ACK_ID"),
            )
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "Some acknowledgement ids in the request were invalid.",
                          [info])
        return {a: by_id[a] for a in ack_ids if a in by_id}

    def _subscription(self, name: str) -> _Subscription:
        sub = self.subscriptions.get(name)
        if sub is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"Subscription does not exist: {name}")
        return sub

    # ------------------------------------------------------------ inspection (tests)

    def backlog(self, subscription: str) -> list[PubsubMessage]:
        with self._lock:
            return [e.message for e in self._subscription(subscription).entries]

    # ------------------------------------------------------------ serving

    def serve(self) -> FakePubSub:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        unary = {
            ("google.pubsub.v1.Publisher", "CreateTopic"): (Topic, Topic, self.create_topic),
            ("google.pubsub.v1.Publisher", "Publish"): (PublishRequest, PublishResponse, self.publish),
            ("google.pubsub.v1.Subscriber", "CreateSubscription"): (Subscription, Subscription,
                                                                     self.create_subscription),
            ("google.pubsub.v1.Subscriber", "Pull"): (PullRequest, PullResponse, self.pull),
            ("google.pubsub.v1.Subscriber", "Acknowledge"): (AcknowledgeRequest, None, self.acknowledge),
            ("google.pubsub.v1.Subscriber", "ModifyAckDeadline"): (ModifyAckDeadlineRequest, None,
                                                                   self.modify_ack_deadline),
        }
        server.add_generic_rpc_handlers(grpc_handlers(unary))
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self._rest = _RestPublish(self)
        return self

    @property
    def host(self) -> str:
        """`host:port` for PUBSUB_EMULATOR_HOST."""
        return f"127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        """The REST base (`<url>/v1/projects/p/topics/t:publish`)."""
        assert self._rest is not None
        return self._rest.url

    def close(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
        if self._rest is not None:
            self._rest.close()


def grpc_handlers(unary: dict[tuple[str, str], tuple[Any, Any, Callable[[Any], Any]]]) -> list[grpc.GenericRpcHandler]:
    """Generic handlers for unary methods: request type, response type (None: Empty) and the implementation;
    `Refused` becomes the RPC's status, with its details as `google.rpc.Status` details."""
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for (service, method), (request_type, response_type, implementation) in unary.items():
        def behaviour(request: Any, context: grpc.ServicerContext, implementation: Any = implementation) -> Any:
            try:
                return implementation(request)
            except Refused as refused:
                details = []
                for detail in refused.details:
                    packed = any_pb2.Any()
                    packed.Pack(detail)
                    details.append(packed)
                status = status_pb2.Status(code=getattr(code_pb2, refused.code.name), message=refused.message,
                                           details=details)
                context.abort_with_status(rpc_status.to_status(status))

        services.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=request_type.deserialize,
            response_serializer=(lambda _: empty_pb2.Empty().SerializeToString()) if response_type is None
            else response_type.serialize,
        )
    return [grpc.method_handlers_generic_handler(name, methods) for name, methods in services.items()]


def _check_message(message: PubsubMessage) -> None:
    if not message.data and not message.attributes:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                      "Some messages contain no data and no attributes; a message must contain at least one of them")
    for key, value in message.attributes.items():
        if len(key.encode()) > 256 or key.startswith("goog"):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid attribute key: {key!r}")
        if len(value.encode()) > 1024:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"Attribute value too long for key {key!r}")


class _RestPublish(FakeHttpService):
    """`POST /v1/{topic}:publish` with a bearer token, as Cloud Tasks calls it with an OAuth token."""

    def __init__(self, pubsub: FakePubSub) -> None:
        self.pubsub = pubsub
        super().__init__()

    def route(self, call: Call) -> Reply:
        if call.method != "POST" or not call.path.startswith("/v1/") or not call.path.endswith(":publish"):
            return Reply(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})
        if not call.headers.get("authorization", "").startswith("Bearer "):
            return Reply(401, {"error": {"code": 401, "message": "Request is missing required authentication "
                                         "credential.", "status": "UNAUTHENTICATED"}})
        topic = call.path[len("/v1/"):-len(":publish")]
        try:
            body = call.json()
            messages = [PubsubMessage(data=base64.b64decode(m.get("data", "")), attributes=m.get("attributes", {}))
                        for m in body["messages"]]
            response = self.pubsub.publish(PublishRequest(topic=topic, messages=messages))
        except Refused as refused:
            status = 404 if refused.code is grpc.StatusCode.NOT_FOUND else 400
            return Reply(status, {"error": {"code": status, "message": refused.message, "status": refused.code.name}})
        except (ValueError, KeyError, TypeError) as exc:
            return Reply(400, {"error": {"code": 400, "message": f"Invalid JSON payload: {exc}",
                                         "status": "INVALID_ARGUMENT"}})
        return Reply(200, {"messageIds": list(response.message_ids)})


def provision(pubsub: FakePubSub, project: str, queues: dict[str, tuple[int, int]]) -> Iterator[str]:
    """Topics, pull subscriptions (exactly-once) and dead-letter topics with their subscriptions, the layout
    the bus adapter expects: queue -> (ack deadline seconds, max delivery attempts). Yields each topic path."""
    for queue, (deadline, attempts) in queues.items():
        topic, dead = f"projects/{project}/topics/{queue}", f"projects/{project}/topics/{queue}-dead-letter"
        pubsub.create_topic(Topic(name=topic))
        pubsub.create_topic(Topic(name=dead))
        pubsub.create_subscription(Subscription(
            name=f"projects/{project}/subscriptions/{queue}", topic=topic, ack_deadline_seconds=deadline,
            enable_exactly_once_delivery=True,
            dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": attempts},
        ))
        pubsub.create_subscription(Subscription(
            name=f"projects/{project}/subscriptions/{queue}-dead-letter", topic=dead, ack_deadline_seconds=60,
            enable_exactly_once_delivery=True,
        ))
        yield topic
