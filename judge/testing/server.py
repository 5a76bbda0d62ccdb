"""A loopback OpenAI-compatible chat-completions server, for tests, examples and benchmarks.

Binds 127.0.0.1 only, on a free port, serves in a background thread, and stops by itself after
``max_seconds`` or ``max_requests`` (or when the ``with`` block ends). Replies are scripted:

* ``script``: a list of actions consumed one per request, then the ``responder`` takes over.
  An action is a :class:`Reply` or one of the fault strings ``"429"``, ``"500"``, ``"503"``,
  ``"400"``, ``"401"``, ``"hang"`` (never answers until the client gives up), ``"badjson"``
  (200 with an invalid JSON body), ``"reset"`` (closes the connection without a response).
* ``responder(request) -> Reply | str`` (a fault string too): the default answers like a judge --
  a JSON verdict when a JSON schema or JSON answer is asked for, ``Rating: [[n]]`` for MT-Bench prompts, a
  ``[[A]]/[[B]]/[[C]]`` verdict for pairwise ones, an opinions list with yes/no verdicts for
  opinions rubrics (toxicity, bias), and score-token logprobs when asked -- with the score derived
  from a hash of the prompt, so the same prompt always gets the same answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from judge.testing.batches import BatchDesk

FAULTS = ("429", "500", "503", "400", "401", "404", "hang", "badjson", "reset", "nochoices")


@dataclass
class Reply:
    """What the server answers to one request."""

    content: str
    logprobs: list[dict[str, float]] | None = None  # per position: token -> logprob (first = chosen)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: Any = None  # when set, sent verbatim as the JSON body (malformed completions for tests)
    finish_reason: str = "stop"  # "length": the completion was cut off at max_tokens


Responder = Callable[[dict[str, Any]], "Reply | str"]


class RateLimit:
    """Token buckets like a hosted API's: requests per second and tokens per minute, each holding
    ``burst_s`` seconds' worth; a request that does not fit gets 429 with the wait in Retry-After
    (``retry-after-ms`` too). Tokens are the prompt's, counted as the usage field counts them.
    With ``headers`` every answer (200 or 429) describes the buckets as OpenAI's do:
    ``x-ratelimit-limit-{requests,tokens}`` (the bucket's size), ``x-ratelimit-remaining-*`` (left
    after this request) and ``x-ratelimit-reset-*`` (until full again, as ``"1.2s"`` / ``"340ms"``)."""

    def __init__(
        self,
        requests_per_s: float = 50.0,
        tokens_per_min: float = 40_000.0,
        burst_s: float = 1.0,
        *,
        headers: bool = True,
    ) -> None:
        self.rates = (requests_per_s, tokens_per_min / 60.0)
        self.capacity = (requests_per_s * burst_s, tokens_per_min / 60.0 * burst_s)
        self.level = list(self.capacity)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()
        self.headers = headers

    def admit(self, tokens: int, now: float | None = None) -> float:
        """0 when the request is admitted (and charged), else the seconds until it would be."""
        return self.check(tokens, now)[0]

    def check(self, tokens: int, now: float | None = None) -> tuple[float, dict[str, str]]:
        """:meth:`admit`, and the rate-limit headers as of that moment (empty without ``headers``)."""
        with self.lock:
            now = time.monotonic() if now is None else now
            for i in (0, 1):
                self.level[i] = min(self.capacity[i], self.level[i] + max(0.0, now - self.stamp) * self.rates[i])
            self.stamp = max(self.stamp, now)
            need = (1.0, float(min(tokens, self.capacity[1])))
            wait = max((need[i] - self.level[i]) / self.rates[i] for i in (0, 1))
            if wait <= 0:
                for i in (0, 1):
                    self.level[i] -= need[i]
            return max(0.0, wait), self._headers() if self.headers else {}

    def _headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for i, name in enumerate(("requests", "tokens")):
            out[f"x-ratelimit-limit-{name}"] = str(math.floor(self.capacity[i]))
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(self.level[i])))
            out[f"x-ratelimit-reset-{name}"] = go_duration((self.capacity[i] - self.level[i]) / self.rates[i])
        return out


def go_duration(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it: ``"6m0s"``, ``"1.25s"``, ``"12ms"``."""
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60.0)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def prompt_text(request: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in request.get("messages", []))


def hashed(text: str, lo: int, hi: int) -> int:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return lo + digest[0] % (hi - lo + 1)


def judge_responder(request: dict[str, Any]) -> Reply:
    """Answer like a well-behaved judge, deterministically (see the module docstring)."""
    text = prompt_text(request)
    lo, hi = 1, 10
    m = re.search(r"from (-?\d+) to (-?\d+)", text)
    fmt = request.get("response_format") or {}
    # OpenAI: {"type": "json_schema", "json_schema": {"schema": S}}; llama.cpp: {"type": "json_object", "schema": S}
    schema = (fmt.get("json_schema") or {}).get("schema") or fmt.get("schema") or {}
    score_schema = schema.get("properties", {}).get("score", {})
    if "minimum" in score_schema:
        lo, hi = int(score_schema["minimum"]), int(score_schema["maximum"])
    elif m:
        lo, hi = int(m.group(1)), int(m.group(2))
    score = hashed(text, lo, hi)
    if request.get("logprobs"):
        # a distribution peaked at `score` over the scale's tokens
        weights = {str(s): math.exp(-abs(s - score)) for s in range(lo, hi + 1)}
        total = sum(weights.values())
        top = dict(sorted(((t, math.log(w / total)) for t, w in weights.items()), key=lambda kv: -kv[1])[:20])
        return Reply(content=str(score), logprobs=[top])
    if "opinions" in schema.get("properties", {}) or (not schema and '{"opinions": [{"opinion":' in text):
        return Reply(content=json.dumps(opinions_answer(text, schema)))
    verdict_enum = schema.get("properties", {}).get("verdict", {}).get("enum")
    if verdict_enum or '"verdict"' in text:
        choice = (verdict_enum or ["A", "B", "tie"])[hashed(text, 0, 2) % len(verdict_enum or [0, 1, 2])]
        return Reply(content=json.dumps({"reasoning": "loopback judge", "verdict": choice}))
    if "[[A]]" in text and "[[B]]" in text:
        return Reply(content=f"Both answers were considered. [[{'ABC'[hashed(text, 0, 2)]}]]")
    if "[[rating]]" in text or "Rating: [[" in text:
        return Reply(content=f"The answer is reasonable.\n\nRating: [[{score}]]")
    if schema or "JSON" in text or "json" in text:
        return Reply(content=json.dumps({"reasoning": "loopback judge", "score": score}))
    return Reply(content=f"This is a loopback answer to: {text[:60]}")


def opinions_answer(text: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """An opinions-rubric verdict for ``text``: 0-3 opinions, each "yes" with probability 1/4, by hash."""
    entry = ((schema or {}).get("properties", {}).get("opinions") or {}).get("items") or {}
    yes, no = (entry.get("properties", {}).get("verdict", {}).get("enum") or ["yes", "no"])[:2]
    opinions = [
        {
            "opinion": f"loopback opinion {i + 1}",
            "verdict": yes if hashed(f"{text}\n{i}", 0, 3) == 0 else no,
            "reason": "loopback judge",
        }
        for i in range(hashed(text, 0, 3))
    ]
    return {"opinions": opinions, "reasoning": "loopback judge"}


class _Server(ThreadingHTTPServer):
    # the stdlib default backlog (5) drops SYNs when a client opens dozens of connections at once,
    # and each dropped SYN costs a 1 s retransmit: p99 latency 1.3 s at 32 concurrent clients
    request_queue_size = 1024
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], loopback: LoopbackServer):
        self.loopback = loopback  # what the handlers answer for
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hangs up mid-answer (a run stopped by a 401, a cancelled call) is ordinary, not a
        # server fault worth a traceback on stderr
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """One request to a :class:`LoopbackServer`: the Batch API's routes, /models and /chat/completions, with the
    server's refusals, script, responder and faults."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    @property
    def loopback(self) -> LoopbackServer:
        """The loopback server this request came to."""
        assert isinstance(self.server, _Server)
        return self.server.loopback

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        server = self.loopback
        server._local.rate_headers = {}
        if self._batch_route("GET", b""):
            return
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:  # noqa: N802
        server = self.loopback
        server._local.rate_headers = {}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self._batch_route("POST", body):
            return
        if server.completions is not None and self.path.rstrip("/").endswith("/v1/completions"):
            self._completions(body)
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            request = json.loads(body or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "request body is not JSON"}})
            return
        refusal = server._refusal(request)
        with server._lock:
            server.requests.append(request)
            action = refusal or (server.script.pop(0) if server.script else None)
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
            over = len(server.requests) >= server.max_requests
        try:
            self._answer(request, action)
        finally:
            with server._lock:
                server.in_flight -= 1
        if over:
            threading.Thread(target=server.stop, daemon=True).start()

    def _completions(self, body: bytes) -> None:
        server = self.loopback
        assert server.completions is not None
        request = json.loads(body or b"{}")
        with server._lock:
            server.requests.append(request)
        answer = server.completions(request)
        if isinstance(answer, str):
            server.statuses.append(answer)
            self._fault(answer)
        else:
            server.statuses.append(200)
            self._json(200, answer)

    def _batch_route(self, method: str, body: bytes) -> bool:
        server = self.loopback
        answer = server.batch_desk.handle(method, self.path, self.headers, body)
        if answer is None:
            return False
        status, payload, ctype = answer
        if ctype is None:
            self._json(status, payload)
        else:
            self._raw(status, payload, ctype)
        return True

    def _answer(self, request: dict[str, Any], action: Reply | str | None) -> None:
        server = self.loopback
        if isinstance(action, Reply) and action.status != 200 and action.body is not None:
            server.statuses.append(action.status)  # a refusal: answered at once, no latency
            self._json(action.status, action.body, action.headers)
            return
        if server.latency_s:
            time.sleep(server.latency_s)
        if action is None:
            action = server.responder(request)
        if isinstance(action, str):
            server.statuses.append(action)
            self._fault(action)
            return
        reply = action
        if reply.delay_s:
            time.sleep(reply.delay_s)
        server.statuses.append(reply.status)
        if reply.body is not None:
            self._json(reply.status, reply.body, reply.headers)
            return
        if reply.status != 200:
            self._json(reply.status, {"error": {"message": reply.content}}, reply.headers)
            return
        self._json(200, completion_body(request, reply, server.model), reply.headers)

    def _fault(self, action: str) -> None:
        server = self.loopback
        if action in ("429", "500", "503", "400", "401", "404"):
            headers = {"Retry-After": server.retry_after} if action == "429" and server.retry_after else {}
            self._json(int(action), {"error": {"message": f"injected {action}", "type": "injected"}}, headers)
        elif action == "hang":
            server._stop.wait(server.max_seconds)  # until the client gives up or the server stops
            self.close_connection = True
        elif action == "badjson":
            self._raw(200, b'{"id": "x", "choices": [ {"message": ', "application/json")
        elif action == "nochoices":
            self._json(200, {"id": "x", "object": "chat.completion", "model": server.model, "choices": []})
        elif action == "reset":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        else:
            raise ValueError(f"unknown fault {action!r} (known: {', '.join(FAULTS)})")

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(obj).encode(), "application/json", headers)

    def _raw(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        server = self.loopback
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req-{len(server.requests)}")
            for k, v in {**getattr(server._local, "rate_headers", {}), **(headers or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


class LoopbackServer:
    """The server; use as a context manager. ``base_url`` ends in ``/v1``."""

    def __init__(
        self,
        responder: Responder = judge_responder,
        *,
        script: list[Reply | str] | None = None,
        latency_ms: float = 0.0,
        max_seconds: float = 120.0,
        max_requests: int = 100_000,
        retry_after: str | None = "0",
        model: str = "loopback-judge",
        port: int = 0,
        response_formats: tuple[str, ...] | None = None,
        context_tokens: int | None = None,
        rate_limit: RateLimit | None = None,
        batch_seconds: float = 0.2,
        batch_faults: list[str] | None = None,
        completions: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.responder = responder
        # legacy /v1/completions (echoed prompt log-probabilities, judge.testing.echo): request -> the JSON
        # body, or a fault string; None: that route is 404, as on a chat-only server
        self.completions = completions
        # Files + Batch API (judge.testing.batches): how long a batch takes, and one fault per created batch
        self.batch_seconds = batch_seconds
        self.batch_faults: list[str] = list(batch_faults or [])
        self.batch_desk = BatchDesk(self)
        self.script: list[Reply | str] = list(script or [])
        self.latency_s = latency_ms / 1000.0
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.retry_after = retry_after
        # llama.cpp behaviours: which response_format types are accepted (None: all), and a context
        # size whose overflow is answered like llama-server does
        self.response_formats = response_formats
        self.context_tokens = context_tokens
        self.rate_limit = rate_limit
        self.model = model
        self.requested_port = port
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int | str] = []
        self.rejected_429 = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        # per handler thread: the rate-limit headers of the request it is answering (RateLimit.check)
        self._local = threading.local()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LoopbackServer:
        self._httpd = _Server(("127.0.0.1", self.requested_port), _Handler, self)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.max_seconds, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def _refusal(self, request: dict[str, Any]) -> Reply | None:
        """What a real server refuses before answering: an unsupported response_format (llama-cpp-python:
        HTTP 500), a prompt over the context (llama-server: HTTP 500), a rate limit (429 + Retry-After)."""
        fmt = (request.get("response_format") or {}).get("type")
        if fmt and self.response_formats is not None and fmt not in self.response_formats:
            allowed = " or ".join(f"'{f}'" for f in self.response_formats)
            # llama-cpp-python's pydantic validation error, answered as HTTP 500
            message = f"1 validation error:\nresponse_format.type\n  Input should be {allowed} [type=literal_error]"
            return Reply("", status=500, body={"error": {"message": message, "type": "internal_server_error"}})
        tokens = max(1, len(prompt_text(request).split()))
        if self.context_tokens is not None and tokens + int(request.get("max_tokens") or 0) > self.context_tokens:
            body = {"error": {"code": 500, "message": "Context size has been exceeded.", "type": "server_error"}}
            return Reply("", status=500, body=body)
        if self.rate_limit is not None:
            wait, self._local.rate_headers = self.rate_limit.check(tokens)
            if wait > 0:
                self.rejected_429 += 1
                headers = {"Retry-After": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))}
                body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
                return Reply("", status=429, body=body, headers=headers)
        return None

    def answer_batch_line(self, request: dict[str, Any]) -> tuple[int, Any]:
        """(status code, body) for one batch line, from the same responder as chat completions; a fault
        string is answered with its status (connection faults count as 500, as a batch records them)."""
        with self._lock:
            self.requests.append(request)
        action = self.responder(request)
        if isinstance(action, str):
            status = int(action) if action.isdigit() else 500
            return status, {"error": {"message": f"injected {action}", "type": "injected"}}
        if action.status != 200:
            return action.status, action.body or {"error": {"message": action.content}}
        return 200, action.body if action.body is not None else completion_body(request, action, self.model)

    def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            self._port_cache = httpd.server_address[1]
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def completion_body(request: dict[str, Any], reply: Reply, model: str) -> dict[str, Any]:
    """An OpenAI chat.completion object for ``reply``."""
    prompt_tokens = max(1, len(prompt_text(request).split()))
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": reply.content},
        "finish_reason": reply.finish_reason,
    }
    if request.get("logprobs") and reply.logprobs is not None:
        content = []
        for pos in reply.logprobs:
            token, lp = next(iter(pos.items()))
            content.append(
                {
                    "token": token,
                    "logprob": lp,
                    "bytes": list(token.encode()),
                    "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in pos.items()],
                }
            )
        choice["logprobs"] = {"content": content, "refusal": None}
    else:
        choice["logprobs"] = None
    return {
        "id": f"chatcmpl-{hashlib.sha256(reply.content.encode()).hexdigest()[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", model),
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max(1, len(reply.content.split())),
            "total_tokens": prompt_tokens + max(1, len(reply.content.split())),
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Run the loopback server in the foreground: ``python -m judge.testing.server --port-file F``."""
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--port-file", required=True, help="Write the chosen port here once listening.")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--batch-seconds", type=float, default=0.2, help="How long a batch takes (Batch API).")
    args = ap.parse_args(argv)
    srv = LoopbackServer(
        latency_ms=args.latency_ms, max_seconds=args.max_seconds, batch_seconds=args.batch_seconds
    ).start()
    Path(args.port_file).write_text(str(srv.port))
    srv._stop.wait(args.max_seconds)
    srv.stop()


if __name__ == "__main__":
    main()
