"""An aiosmtpd handler for the integration tests: every message received is
written to DIR as one JSON file (envelope, decoded subject, threading
headers, text and HTML bodies), atomically (written aside, then renamed), so a test can read what
a real SMTP server got without parsing MIME itself.

Run: PYTHONPATH=synchealth/tests/support python3 -m aiosmtpd -n \
        -l 127.0.0.1:PORT -c smtp_sink.JsonDir DIR
"""

import email
import json
import os
import time
import uuid
from email import policy


class JsonDir:
    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("smtp_sink.JsonDir takes one argument: the directory")
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(message["subject"]),
            "message_id": message["message-id"],
            "in_reply_to": message["in-reply-to"],
            "references": message["references"],
            "auto_submitted": message["auto-submitted"],
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
        }
        name = f"{time.time_ns()}-{uuid.uuid4().hex}"
        aside = os.path.join(self.directory, f".{name}.tmp")
        with open(aside, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(aside, os.path.join(self.directory, f"{name}.json"))
        return "250 Message accepted for delivery"
