"""A small Kubeflow Pipelines v2beta1 REST server on loopback, for testing the client side of submit and schedule.

It implements only what `kfp.Client` (2.17.3) calls for those flows: healthz, experiments (list with a
display_name filter, create), pipelines (list with a filter, upload, upload_version, list versions), runs (create)
and recurring runs (list with filters and pages, create, delete, enable, disable). It keeps state in memory,
records every request (method, path, query, headers, body) for assertions, and rejects bodies a real backend would
reject: an upload that is not a pipeline spec (YAML with pipelineInfo and root), a run or recurring run whose
parameters are not inputs of the referenced pipeline version, a cron that has not 6 fields, an unknown id.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

PREFIX = "/apis/v2beta1"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, {"fields": ..., "file": bytes} for uploads, or None


class FakeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class FakeKfpState:
    multi_user: bool = False
    experiments: dict[str, dict] = field(default_factory=dict)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    clock: itertools.count = field(default_factory=itertools.count)

    def timestamp(self) -> str:
        # strictly increasing, so "created_at desc" orders objects the way they were made
        seconds = next(self.clock)
        return datetime.fromtimestamp(1_800_000_000 + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _display_name_filter(query: dict[str, str]) -> str | None:
    """The display_name of an EQUALS predicate in a v2beta1 filter (the only filter the client sends here; kfp
    sends the operation as its enum number 1, the JSON name is accepted too)."""
    if "filter" not in query:
        return None
    predicates = json.loads(query["filter"]).get("predicates", [])
    for predicate in predicates:
        if predicate.get("key") != "display_name" or predicate.get("operation") not in ("EQUALS", 1):
            raise FakeError(400, f"unsupported filter predicate {predicate}")
        return predicate.get("stringValue", predicate.get("string_value"))
    return None


def _page(items: list[dict], query: dict[str, str], key: str) -> dict:
    size = int(query.get("page_size") or 0) or len(items) or 1
    start = int(query.get("page_token") or 0)
    page = items[start:start + size]
    body: dict[str, Any] = {key: page, "total_size": len(items)} if page else {"total_size": len(items)}
    if start + size < len(items):
        body["next_page_token"] = str(start + size)
    return body


def _sorted(items: list[dict], sort_by: str | None) -> list[dict]:
    if not sort_by:
        return items
    name, _, order = sort_by.partition(" ")
    return sorted(items, key=lambda item: item.get(name, ""), reverse=order.strip() == "desc")


def _parse_pipeline_spec(content: bytes) -> dict:
    try:
        documents = [d for d in yaml.safe_load_all(content.decode()) if d is not None]
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise FakeError(400, f"uploaded file is not YAML: {error}") from error
    if not documents or not isinstance(documents[0], dict):
        raise FakeError(400, "uploaded file holds no pipeline spec")
    spec = documents[0]
    if "pipelineInfo" not in spec or "root" not in spec:
        raise FakeError(400, "pipeline spec lacks pipelineInfo or root")
    return spec


def _check_parameters(spec: dict, parameters: dict) -> None:
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise FakeError(400, f"parameters {unknown} are not inputs of the pipeline")
    kinds = {"STRING": str, "NUMBER_INTEGER": (int, float), "NUMBER_DOUBLE": (int, float), "BOOLEAN": bool,
             "LIST": list, "STRUCT": dict}
    for name, value in parameters.items():
        expected = kinds.get(declared[name].get("parameterType", "STRING"), object)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise FakeError(400, f"parameter {name!r}: {value!r} is not a {declared[name].get('parameterType')}")


class FakeKfpHandler(BaseHTTPRequestHandler):
    server: FakeKfpHttpServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "uploadfile":
                    return {"file": part.get_payload(decode=True), "filename": part.get_filename()}
            raise FakeError(400, "multipart upload without an uploadfile part")
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise FakeError(400, f"body is not JSON: {error}") from error

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        state = self.server.state
        try:
            body = self._body()
            with self.server.lock:
                headers = {name.lower(): value for name, value in self.headers.items()}
                state.requests.append(RecordedRequest(method, url.path, query, headers, body))
                token = self.server.required_token
                if token and self.headers.get("Authorization") != f"Bearer {token}":
                    raise FakeError(401, "missing or wrong bearer token")
                if not url.path.startswith(PREFIX):
                    raise FakeError(404, f"no route {url.path}")
                status, response = self.server.route(method, url.path[len(PREFIX):], query, body)
        except FakeError as error:
            status, response = error.status, {"error": str(error), "code": error.status, "message": str(error)}
        payload = json.dumps(response).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class FakeKfpHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, required_token: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), FakeKfpHandler)
        self.state = FakeKfpState()
        self.lock = threading.Lock()
        self.required_token = required_token
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKfpHttpServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kfp",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- assertions helpers -------------------------------------------------------------------------------
    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.state.requests if r.method == method and r.path == PREFIX + path]

    def recurring_runs_named(self, name: str) -> list[dict]:
        return [r for r in self.state.recurring_runs.values() if r["display_name"] == name]

    # -- routes ---------------------------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        state = self.state
        if parts == ["healthz"] and method == "GET":
            return 200, {"multi_user": state.multi_user, "pipeline_store": "database"}
        if parts == ["experiments"]:
            return self._experiments(method, query, body)
        if parts[:1] == ["pipelines"]:
            return self._pipelines(method, parts[1:], query, body)
        if parts == ["runs"] and method == "POST":
            return 200, self._create_run(body)
        if parts[:1] == ["recurringruns"]:
            return self._recurring_runs(method, parts[1:], query, body)
        raise FakeError(404, f"no route {method} {path}")

    def _experiments(self, method: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        state = self.state
        if method == "GET":
            name = _display_name_filter(query)
            items = [e for e in state.experiments.values() if name is None or e["display_name"] == name]
            return 200, _page(items, query, "experiments")
        if method == "POST":
            if not body or not body.get("display_name"):
                raise FakeError(400, "experiment needs a display_name")
            if any(e["display_name"] == body["display_name"] for e in state.experiments.values()):
                raise FakeError(409, f"experiment {body['display_name']!r} exists")
            experiment = {"experiment_id": str(uuid.uuid4()), "display_name": body["display_name"],
                          "namespace": body.get("namespace") or "", "created_at": state.timestamp(),
                          "storage_state": "AVAILABLE"}
            state.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        raise FakeError(405, f"{method} experiments")

    def _pipelines(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        state = self.state
        if not parts and method == "GET":
            name = _display_name_filter(query)
            items = [p for p in state.pipelines.values() if name is None or p["display_name"] == name]
            return 200, _page(items, query, "pipelines")
        if parts == ["upload"] and method == "POST":
            name = query.get("display_name") or query.get("name")
            if not name:
                raise FakeError(400, "upload needs a name")
            if any(p["display_name"] == name for p in state.pipelines.values()):
                raise FakeError(409, f"pipeline {name!r} exists")
            spec = _parse_pipeline_spec(body["file"])
            pipeline = {"pipeline_id": str(uuid.uuid4()), "display_name": name, "name": name,
                        "namespace": query.get("namespace", ""), "created_at": state.timestamp()}
            state.pipelines[pipeline["pipeline_id"]] = pipeline
            self._add_version(pipeline["pipeline_id"], name, spec)
            return 200, pipeline
        if parts == ["upload_version"] and method == "POST":
            pipeline_id = query.get("pipelineid")
            if pipeline_id not in state.pipelines:
                raise FakeError(404, f"no pipeline {pipeline_id!r}")
            name = query.get("display_name") or query.get("name")
            if not name:
                raise FakeError(400, "upload_version needs a name")
            if any(v["display_name"] == name and v["pipeline_id"] == pipeline_id for v in state.versions.values()):
                raise FakeError(409, f"version {name!r} exists")
            return 200, self._add_version(pipeline_id, name, _parse_pipeline_spec(body["file"]))
        if len(parts) == 2 and parts[1] == "versions" and method == "GET":
            if parts[0] not in state.pipelines:
                raise FakeError(404, f"no pipeline {parts[0]!r}")
            items = _sorted([v for v in state.versions.values() if v["pipeline_id"] == parts[0]],
                            query.get("sort_by"))
            return 200, _page(items, query, "pipeline_versions")
        raise FakeError(404, f"no route {method} pipelines/{'/'.join(parts)}")

    def _add_version(self, pipeline_id: str, name: str, spec: dict) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()), "display_name": name,
                   "name": name, "created_at": self.state.timestamp(), "pipeline_spec": spec}
        self.state.versions[version["pipeline_version_id"]] = version
        return version

    def _resolve_version(self, body: dict, allow_latest: bool) -> dict:
        reference = body.get("pipeline_version_reference") or {}
        if body.get("pipeline_spec"):
            raise FakeError(400, "this fake expects runs of uploaded pipeline versions, not inline specs")
        pipeline_id, version_id = reference.get("pipeline_id"), reference.get("pipeline_version_id")
        if pipeline_id not in self.state.pipelines:
            raise FakeError(404, f"no pipeline {pipeline_id!r}")
        if version_id is None:
            if not allow_latest:
                raise FakeError(400, "a run needs a pipeline_version_id")
            versions = [v for v in self.state.versions.values() if v["pipeline_id"] == pipeline_id]
            return max(versions, key=lambda v: v["created_at"])
        version = self.state.versions.get(version_id)
        if version is None or version["pipeline_id"] != pipeline_id:
            raise FakeError(404, f"no version {version_id!r} of pipeline {pipeline_id!r}")
        return version

    def _check_common(self, body: Any, allow_latest: bool) -> None:
        if not isinstance(body, dict) or not body.get("display_name"):
            raise FakeError(400, "body needs a display_name")
        if body.get("experiment_id") and body["experiment_id"] not in self.state.experiments:
            raise FakeError(404, f"no experiment {body['experiment_id']!r}")
        version = self._resolve_version(body, allow_latest)
        _check_parameters(version["pipeline_spec"], (body.get("runtime_config") or {}).get("parameters") or {})

    def _create_run(self, body: Any) -> dict:
        self._check_common(body, allow_latest=False)
        run = dict(body, run_id=str(uuid.uuid4()), created_at=self.state.timestamp(), state="PENDING")
        self.state.runs[run["run_id"]] = run
        return run

    def _recurring_runs(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        state = self.state
        if not parts and method == "GET":
            name = _display_name_filter(query)
            experiment_id = query.get("experiment_id")
            items = [r for r in state.recurring_runs.values()
                     if (name is None or r["display_name"] == name)
                     and (experiment_id is None or r.get("experiment_id") == experiment_id)]
            body = _page(_sorted(items, query.get("sort_by")), query, "recurringRuns")
            return 200, body
        if not parts and method == "POST":
            self._check_common(body, allow_latest=True)
            cron = ((body.get("trigger") or {}).get("cron_schedule") or {}).get("cron")
            if cron is None or (len(cron.split()) != 6 and not cron.startswith("@")):
                raise FakeError(400, f"cron {cron!r} must have 6 fields or be a descriptor")
            if body.get("mode") not in ("ENABLE", "DISABLE"):
                raise FakeError(400, f"mode {body.get('mode')!r}")
            recurring = dict(body, recurring_run_id=str(uuid.uuid4()), created_at=state.timestamp(),
                             status="ENABLED" if body["mode"] == "ENABLE" else "DISABLED")
            state.recurring_runs[recurring["recurring_run_id"]] = recurring
            return 200, recurring
        if len(parts) == 1:
            run_id, _, action = parts[0].partition(":")
            if run_id not in state.recurring_runs:
                raise FakeError(404, f"no recurring run {run_id!r}")
            if method == "DELETE" and not action:
                del state.recurring_runs[run_id]
                return 200, {}
            if method == "POST" and action in ("enable", "disable"):
                state.recurring_runs[run_id].update(
                    mode=action.upper(), status="ENABLED" if action == "enable" else "DISABLED")
                return 200, {}
        raise FakeError(404, f"no route {method} recurringruns/{'/'.join(parts)}")
