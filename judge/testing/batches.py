"""The Files and Batch API endpoints of the loopback server (OpenAI's shapes), kept in memory.

A batch's state moves with time, computed when it is read: ``validating`` for the first tenth of
``batch_seconds``, then ``in_progress``, then ``completed`` -- every line answered by the server's
chat-completions responder at that moment, output lines in a shuffled order. Faults, one per
created batch from the server's ``batch_faults`` script (then ``"ok"``):

* ``"failed"``: ends ``failed`` after validating (``errors.data``: token_limit_exceeded), nothing run.
* ``"expired"``: ends ``expired`` with about half of the lines answered; the rest go to the error
  file with ``error.code`` ``batch_expired``.
* ``"drop"``: completes, but a third of the lines are in neither file.
* ``"ok"``: completes normally.

A line whose responder answer is a fault string (``"500"``, ``"429"``, ``"400"``...) or a non-200
:class:`Reply` goes to the error file with that status. An input file with a bad line (not JSON,
no ``custom_id``, a duplicate ``custom_id``, another ``url`` than the endpoint, no ``body.model``)
makes the batch end ``failed`` with one error per bad line, as the real API validates.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from judge.testing.server import LoopbackServer

BATCH_FAULTS = ("ok", "failed", "expired", "drop")
ENDPOINTS = ("/v1/chat/completions",)


def _error(message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body."""
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if not msg.is_multipart():
        return fields
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)  # bytes of a leaf part (None for a nested multipart)
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


class BatchDesk:
    """Files and batches of one :class:`LoopbackServer`; ``handle`` answers their routes."""

    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.files: dict[str, dict[str, Any]] = {}  # id -> {"meta": File, "data": bytes}
        self.batches: dict[str, dict[str, Any]] = {}  # id -> {"obj": Batch, "lines": [...], "fault": str, "t0": s}
        self.lines_run = 0
        self._lock = threading.Lock()
        self._seq = 0

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any, str | None] | None:
        """(status, JSON object or raw bytes, content type of raw bytes), or None for another route."""
        parts = path.split("?")[0].strip("/").split("/")
        if parts and parts[0] == "v1":
            parts = parts[1:]
        if not parts or parts[0] not in ("files", "batches"):
            return None
        with self._lock:
            if parts[0] == "files":
                return self._files(method, parts[1:], headers, body)
            return self._batches(method, parts[1:], body)

    # ---- files
    def _store(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": "file-" + uuid.uuid4().hex[:24],
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self.files[meta["id"]] = {"meta": meta, "data": data}
        return meta

    def _files(self, method: str, rest: list[str], headers: Any, body: bytes) -> tuple[int, Any, str | None]:
        if not rest and method == "POST":
            fields = parse_multipart(headers.get("Content-Type") or "", body)
            if "file" not in fields:
                return 400, _error("Missing required parameter: 'file'.", param="file"), None
            purpose = fields.get("purpose", (None, b""))[1].decode().strip()
            if purpose != "batch":
                return 400, _error(f"Invalid value for 'purpose': {purpose!r} (loopback: only 'batch')"), None
            name, data = fields["file"]
            return 200, self._store(data, name or "upload.jsonl", purpose), None
        if not rest or rest[0] not in self.files:
            return 404, _error(f"No such File object: {rest[0] if rest else ''}", param="id"), None
        entry = self.files[rest[0]]
        if len(rest) == 1 and method == "GET":
            return 200, entry["meta"], None
        if len(rest) == 2 and rest[1] == "content" and method == "GET":
            return 200, entry["data"], "application/octet-stream"
        return 404, _error(f"no route {method} files/{'/'.join(rest)}"), None

    # ---- batches
    def _batches(self, method: str, rest: list[str], body: bytes) -> tuple[int, Any, str | None]:
        if not rest and method == "POST":
            return self._create(body)
        if not rest and method == "GET":
            data = [self._advance(b) for b in reversed(self.batches.values())]
            return 200, {"object": "list", "data": data, "has_more": False}, None
        if rest[0] not in self.batches:
            return 404, _error(f"No such Batch object: {rest[0]}", param="id"), None
        b = self.batches[rest[0]]
        if len(rest) == 1 and method == "GET":
            return 200, self._advance(b), None
        if len(rest) == 2 and rest[1] == "cancel" and method == "POST":
            obj = self._advance(b)
            if obj["status"] in ("validating", "in_progress"):
                obj["status"] = "cancelling"
                obj["cancelling_at"] = int(time.time())
            elif obj["status"] not in ("cancelling", "cancelled"):
                return 409, _error(f"Cannot cancel a batch with status '{obj['status']}'."), None
            return 200, obj, None
        return 404, _error(f"no route {method} batches/{'/'.join(rest)}"), None

    def _create(self, body: bytes) -> tuple[int, Any, str | None]:
        try:
            req = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return 400, _error("request body is not JSON"), None
        fid, endpoint = req.get("input_file_id"), req.get("endpoint")
        if fid not in self.files:
            return 404, _error(f"No such File object: {fid}", param="input_file_id"), None
        if endpoint not in ENDPOINTS:
            return 400, _error(f"Invalid value for 'endpoint': {endpoint!r}", param="endpoint"), None
        if req.get("completion_window") != "24h":
            return 400, _error("Invalid value for 'completion_window'; only '24h'.", param="completion_window"), None
        errors, lines = _validate(self.files[fid]["data"], endpoint)
        script = self.server.batch_faults
        fault = script.pop(0) if script else "ok"
        if fault not in BATCH_FAULTS:
            raise ValueError(f"unknown batch fault {fault!r} (known: {', '.join(BATCH_FAULTS)})")
        now = int(time.time())
        obj = {
            "id": "batch_" + uuid.uuid4().hex[:24],
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": fid,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86400,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": req.get("metadata"),
        }
        self._seq += 1
        self.batches[obj["id"]] = {
            "obj": obj,
            "lines": lines,
            "errors": errors,
            "fault": fault,
            "t0": time.monotonic(),
            "seq": self._seq,
        }
        return 200, obj, None

    def _advance(self, b: dict[str, Any]) -> dict[str, Any]:
        """Move a batch along its timeline to now and return its Batch object."""
        obj = b["obj"]
        if obj["status"] in ("completed", "failed", "expired", "cancelled"):
            return obj
        elapsed = time.monotonic() - b["t0"]
        total_s = self.server.batch_seconds
        now = int(time.time())
        if obj["status"] == "cancelling":
            self._finish(b, "cancelled", run=0)
            return obj
        if elapsed < 0.1 * total_s:
            return obj
        if b["errors"] or b["fault"] == "failed":
            errors = b["errors"] or [
                {"code": "token_limit_exceeded", "message": "Enqueued token limit reached (loopback).", "line": None}
            ]
            obj.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
            return obj
        if obj["status"] == "validating":
            obj.update(status="in_progress", in_progress_at=now)
            obj["request_counts"]["total"] = len(b["lines"])
        if elapsed < total_s:
            # lines answered so far, for a progress display
            share = (elapsed - 0.1 * total_s) / (0.9 * total_s)
            obj["request_counts"]["completed"] = int(len(b["lines"]) * share)
            return obj
        n = len(b["lines"])
        if b["fault"] == "expired":
            self._finish(b, "expired", run=n // 2)
        else:
            self._finish(b, "completed", run=n)
        return obj

    def _finish(self, b: dict[str, Any], status: str, *, run: int) -> None:
        obj = b["obj"]
        order = list(range(len(b["lines"])))
        random.Random(b["seq"]).shuffle(order)  # output lines in any order, as the real API writes them
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        dropped = set(order[: len(order) // 3]) if b["fault"] == "drop" else set()
        counts = {"total": len(order), "completed": 0, "failed": 0}
        for k, i in enumerate(order):
            cid, body = b["lines"][i]
            line: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": cid, "error": None}
            if k >= run:
                if obj["status"] == "validating" and status == "cancelled":
                    continue  # cancelled before it started: no lines at all
                code = "batch_cancelled" if status == "cancelled" else "batch_expired"
                line.update(response=None, error={"code": code, "message": f"not run: the batch {status}"})
                err.append(line)
                counts["failed"] += 1
                continue
            self.lines_run += 1
            status_code, payload = self.server.answer_batch_line(body)
            line["response"] = {
                "status_code": status_code,
                "request_id": f"req_{uuid.uuid4().hex[:12]}",
                "body": payload,
            }
            if i in dropped:
                continue
            (out if status_code == 200 else err).append(line)
            counts["completed" if status_code == 200 else "failed"] += 1
        for key, lines, suffix in (("output_file_id", out, "output"), ("error_file_id", err, "error")):
            if lines:
                data = "".join(json.dumps(x) + "\n" for x in lines).encode()
                obj[key] = self._store(data, f"{obj['id']}_{suffix}.jsonl", "batch_output")["id"]
        obj["request_counts"] = counts
        obj["status"] = status
        obj[f"{status}_at"] = int(time.time())


def _validate(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """(errors, lines) of an input file, checked like the real API before it runs anything."""
    errors: list[dict[str, Any]] = []
    lines: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for no, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            errors.append({"code": "invalid_json_line", "message": "This line is not valid JSON.", "line": no})
            continue
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        problem = None
        if not isinstance(cid, str) or not cid:
            problem = "Missing required parameter: 'custom_id'."
        elif obj.get("method") != "POST" or obj.get("url") != endpoint:
            problem = f"The url {obj.get('url')!r} does not match the batch endpoint {endpoint!r}."
        elif not isinstance(obj.get("body"), dict) or not obj["body"].get("model"):
            problem = "Missing required parameter: 'body.model'."
        elif cid in seen:
            problem = "The custom_id for this request is a duplicate of another request."
        if problem:
            errors.append({"code": "invalid_request", "message": problem, "line": no})
            continue
        assert isinstance(cid, str)  # a missing or non-string custom_id is a problem above
        seen.add(cid)
        lines.append((cid, obj["body"]))
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "The input file contains no requests.", "line": None})
    return errors, lines
