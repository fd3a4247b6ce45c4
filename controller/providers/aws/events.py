"""S3 event notifications, read from an SQS queue, as an
:class:`~controller.providers.protocols.ObjectChangeFeed`.

The bucket's owner points the bucket's notification configuration (``ObjectCreated:*``,
``ObjectRemoved:*``) at a standard SQS queue in the bucket's region; Lifeboat only reads
and deletes messages there (IAM actions ``sqs:GetQueueUrl``, ``sqs:ReceiveMessage`` and
``sqs:DeleteMessage``, which also grants DeleteMessageBatch). It never changes the
bucket's notification configuration, which may serve other consumers too.

Polls are short (``WaitTimeSeconds`` 0): a long poll would hold one of the region's call
slots for its whole wait. Every call goes through the region's gate like any other, so an
Impaired region gets none. Messages that are not S3 notices (S3's ``s3:TestEvent``,
anything else put on the queue) are acknowledged with no change in them.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from controller.providers.aws.connector import AwsConnector
from controller.providers.protocols import ChangeMessage, ObjectChange

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

MAX_BATCH = 10  # SQS's limit for ReceiveMessage and DeleteMessageBatch


def parse_notice(body: str) -> tuple[ObjectChange, ...]:
    """The object changes in one S3 event notification (none for anything else)."""
    try:
        document = json.loads(body)
    except ValueError:
        return ()
    if not isinstance(document, Mapping):
        return ()
    if isinstance(document.get("Message"), str):  # delivered through SNS: unwrap
        return parse_notice(document["Message"])
    records = document.get("Records")
    if not isinstance(records, list):
        return ()
    changes = []
    for record in records:
        change = _change(record)
        if change is not None:
            changes.append(change)
    return tuple(changes)


def _change(record: Any) -> ObjectChange | None:
    if not isinstance(record, Mapping) or record.get("eventSource") != "aws:s3":
        return None
    name = str(record.get("eventName", ""))
    if not name.startswith(("ObjectCreated:", "ObjectRemoved:")):
        return None
    s3 = record.get("s3") or {}
    bucket = str((s3.get("bucket") or {}).get("name", ""))
    obj = s3.get("object") or {}
    if not bucket or "key" not in obj:
        return None
    try:
        when = datetime.fromisoformat(str(record.get("eventTime", "")).replace("Z", "+00:00"))
        stamp = when.timestamp()
    except ValueError:
        stamp = 0.0
    return ObjectChange(
        bucket=bucket,
        key=unquote_plus(str(obj["key"])),  # S3 sends keys URL-encoded (form style)
        removed=name.startswith("ObjectRemoved:"),
        time=stamp,
        etag=str(obj.get("eTag", "")).strip('"'),
        size=int(obj.get("size", 0) or 0),
    )


class SqsChangeFeed:
    """The S3 notices waiting in one SQS queue of ``region`` (by name or URL)."""

    def __init__(self, connector: AwsConnector, region: str, queue: str) -> None:
        if not queue:
            raise ValueError("an SQS queue name or URL is needed")
        self.connector = connector
        self.region = region
        self.queue = queue
        self._url: str | None = queue if queue.startswith(("https://", "http://")) else None

    def __repr__(self) -> str:
        return f"SqsChangeFeed({self.region}/{self.queue})"

    def _client(self) -> SQSClient:
        client: SQSClient = self.connector.client("sqs", self.region)
        return client

    async def _queue_url(self) -> str:
        if self._url is None:
            answer = await self.connector.call(
                self.region,
                "sqs",
                "GetQueueUrl",
                functools.partial(self._client().get_queue_url, QueueName=self.queue),
                mutating=False,
            )
            self._url = answer["QueueUrl"]
        return self._url

    async def receive(self, max_messages: int = MAX_BATCH) -> list[ChangeMessage]:
        url = await self._queue_url()
        answer = await self.connector.call(
            self.region,
            "sqs",
            "ReceiveMessage",
            functools.partial(
                self._client().receive_message,
                QueueUrl=url,
                MaxNumberOfMessages=max(1, min(max_messages, MAX_BATCH)),
                WaitTimeSeconds=0,
            ),
            mutating=False,
        )
        return [
            ChangeMessage(str(message["ReceiptHandle"]), parse_notice(message.get("Body", "")))
            for message in answer.get("Messages", [])
            if "ReceiptHandle" in message
        ]

    async def ack(self, receipts: Sequence[str]) -> None:
        url = await self._queue_url()
        for start in range(0, len(receipts), MAX_BATCH):
            batch = receipts[start : start + MAX_BATCH]
            answer = await self.connector.call(
                self.region,
                "sqs",
                "DeleteMessageBatch",
                functools.partial(
                    self._client().delete_message_batch,
                    QueueUrl=url,
                    Entries=[{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(batch)],
                ),
                mutating=True,
            )
            failed = answer.get("Failed", [])
            if failed:  # they come back after the visibility timeout: harmless
                log.debug("%s: %d message(s) not deleted", self, len(failed))
