"""A stateful imitation of the Kubeflow Pipelines v2beta1 REST API on loopback, derived from the upstream server.

It serves what `kfp.Client` (2.17.3), pipelines/submission.py and pipelines/schedules.py call: healthz,
experiments, pipelines (list, upload, upload_version, list versions), runs (create) and recurring runs (list,
create, delete, enable, disable).
Every response shape follows the upstream apiserver of kubeflow/pipelines tag 2.17.0 (the backend matching kfp
2.17.3); the file behind each:

- JSON encoding: proto field names, unpopulated fields omitted, enums as names, int64 as strings, timestamps as
  RFC 3339 with whole seconds (backend/src/apiserver/common/utils.go: `UseProtoNames: true, EmitUnpopulated:
  false`; model objects keep `CreatedAtInSec`, so two objects made in the same second tie).
- gRPC errors (everything but the uploads): `{"code": <grpc code>, "message": ..., "details": []}` with the HTTP
  status of the code, e.g. NotFound -> 404 (grpc-gateway v2's default error handler, go.mod
  grpc-gateway/v2 v2.28.0).
- healthz: `{"commit_sha", "tag_name", "multi_user", "pipeline_store"}` (backend/src/apiserver/main.go,
  `healthzResponse`).
- uploads: the created Pipeline (v2beta1 `toApiPipeline`) or PipelineVersion; errors as
  `{"error_message", "error_details"}` with 400/409 (server/pipeline_upload_server.go, `writeErrorToResponse`).
- a version's `pipeline_spec`: the first YAML document as is, or, when the package also holds a platform
  (kfp-kubernetes) document, `{"pipeline_spec": <first>, "platform_spec": <second>}`
  (server/api_util.go `YamlStringToPipelineSpecStruct`, template/v2_template.go
  `IsPlatformSpecWithKubernetesConfig`).
- lists sort by the requested key, then by id in the same direction (apiserver/list/list.go).
- recurring runs (server/api_converter.go `toApiRecurringRun`, resource/resource_manager.go `CreateJob`,
  `DeleteJob`): a run pinned to a version gets the default service account `pipeline-runner`
  (template/template.go `setDefaultServiceAccount`); one with only a pipeline id (follow the latest version) is
  validated against the latest version and keeps the service account it was given and a reference without a
  version id; `runtime_config` is omitted when it has no parameters and no pipeline root; `mode` and `status`
  mirror the enabled flag; deleting or enabling an id that does not exist is NotFound (404).
- deleting a recurring run takes two steps, as `DeleteJob` does (resource/resource_manager.go): its
  ScheduledWorkflow is deleted, then its row. In between the run is still listed and read, deleting it again
  succeeds (a ScheduledWorkflow NotFound is skipped), and enabling or disabling it answers 500 (`ChangeJobMode`
  reads the row, then the ScheduledWorkflow's Get (enable) or Patch fails with NotFound, which it returns as
  `util.NewInternalServerError`; kubeflow/pipelines 2.17.0, commit 4a3592cb2dd0a91a4652ab93893ec8beda1f3158).

`resolves_latest=True` imitates the backends before kubeflow/pipelines PR #11560 (tags 2.0.0 to 2.4.1): a
recurring run created with only a pipeline id is resolved to the pipeline's latest version at creation and pinned
to it, like a run created with that version id (resource/resource_manager.go at tag 2.4.0: `CreateJob` calls
`fetchTemplateFromPipelineSpec`, whose `fetchPipelineVersionFromPipelineSpec` takes `GetLatestPipelineVersion`
and writes its id into the job's `PipelineVersionId`; the template then sets the default service account). From
tag 2.5.0 on (2.17.0 included) `CreateJob` leaves such a job unpinned (the default here).

State is in memory; every request is recorded (method, path, query, headers, body) for assertions. Bodies a real
backend rejects are rejected: an upload with no pipeline spec, run parameters that are not inputs of the version,
an unparsable cron, max_concurrency outside 1..10, unknown ids. `latency_s` sleeps a random fraction of that
before each request (outside the lock) so that racing clients interleave as they would against a real server;
`list_barrier=N` makes the first N recurring-run listings wait for each other. `pauses` (a list of `Pause`) hold
matching requests until a given number of them have arrived, before or after the server acts on them, which
reproduces a chosen interleaving of racing clients every time (`mid_delete=True`: a recurring run's deletion
held between its two steps); `failures` (a list of `Failure`) answer chosen
requests with an error.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

PREFIX = "/apis/v2beta1"
DEFAULT_SERVICE_ACCOUNT = "pipeline-runner"  # backend/src/apiserver/common/const.go DefaultPipelineRunnerServiceAccount
DELETING = object()  # a recurring run's deletion whose second step (the row) is still to come
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, {"file": bytes, "filename": ...} for uploads, or None


@dataclass
class Pause:
    """Hold requests `method path` (path after /apis/v2beta1) in groups of `parties`: each waits until `parties`
    of them have arrived, either before the server acts on it (`after_effect=False`) or after it has acted and
    before it answers (`after_effect=True`: every racer's change is made before any racer hears back). Groups
    repeat (a cyclic barrier); `limit` caps how many requests are held in all (None: no cap). `mid_delete=True`
    holds a `DELETE /recurringruns/{id}` between its steps instead (its ScheduledWorkflow deleted, its row not)."""

    method: str
    path: str
    parties: int
    after_effect: bool = False
    limit: int | None = None
    mid_delete: bool = False
    timeout_s: float = 60.0
    held: int = 0
    barrier: threading.Barrier | None = None

    def __post_init__(self) -> None:
        self.barrier = threading.Barrier(self.parties, timeout=self.timeout_s)

    def matches(self, method: str, path: str, stage: str) -> bool:
        own_stage = "mid_delete" if self.mid_delete else "after" if self.after_effect else "before"
        return (method, path, stage) == (self.method, PREFIX + self.path, own_stage)


@dataclass
class Failure:
    """Answer `method path` with HTTP `status` (a gRPC-style error) for `count` matching requests after the first
    `skip` matching ones have been served normally: a server or proxy failing in the middle of a call."""

    method: str
    path: str
    skip: int = 0
    count: int = 1
    status: int = 503
    seen: int = 0


class FakeError(Exception):
    def __init__(self, status: int, message: str, upload: bool = False) -> None:
        super().__init__(message)
        self.status, self.upload = status, upload

    def body(self) -> dict:
        if self.upload:  # pipeline_upload_server.go writeErrorToResponse: apiv1beta1.Error
            return {"error_message": str(self), "error_details": str(self)}
        return {"code": GRPC_CODES.get(self.status, 2), "message": str(self), "details": []}


def _rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _drop_empty(data: dict) -> dict:
    """protojson with EmitUnpopulated false: zero values (0, "", False, {}, [], None) are left out."""
    return {key: value for key, value in data.items() if value not in (None, "", 0, False, {}, [])}


@dataclass
class FakeKfpState:
    multi_user: bool = False
    experiments: dict[str, dict] = field(default_factory=dict)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)  # internal: "manifest" holds the uploaded text
    runs: dict[str, dict] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)  # recurring runs, internal form (model.Job)
    requests: list[RecordedRequest] = field(default_factory=list)
    clock: Callable[[], float] = time.time

    def now(self) -> int:
        return int(self.clock())


# -- pipeline specs ---------------------------------------------------------------------------------------------------
def _documents(manifest: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(manifest) if d is not None]


def _is_platform_spec(document: dict) -> bool:
    return isinstance(document.get("platforms"), dict) and "kubernetes" in document["platforms"]


def spec_struct(manifest: str) -> dict:
    """api_util.go YamlStringToPipelineSpecStruct: the pipeline spec, wrapped with the platform spec if any."""
    pipeline, platform = None, None
    for document in _documents(manifest):
        if _is_platform_spec(document):
            platform = document
        else:
            pipeline = document
    if pipeline is None:
        raise FakeError(400, "No pipeline spec provided in yaml doc")
    return pipeline if platform is None else {"pipeline_spec": pipeline, "platform_spec": platform}


def _read_pipeline_file(content: bytes) -> str:
    try:
        text = content.decode()
        documents = _documents(text)
    except (yaml.YAMLError, UnicodeDecodeError):
        raise FakeError(400, "Failed to read a pipeline spec file", upload=True) from None
    pipelines = [d for d in documents if isinstance(d, dict) and not _is_platform_spec(d)]
    if len(pipelines) != 1 or "pipelineInfo" not in pipelines[0] or "root" not in pipelines[0]:
        raise FakeError(400, "Failed to read a pipeline spec file", upload=True)
    return text


def _declared(manifest: str) -> dict:
    for document in _documents(manifest):
        if not _is_platform_spec(document):
            return document.get("root", {}).get("inputDefinitions", {}).get("parameters", {}) or {}
    return {}


def _check_parameters(manifest: str, parameters: dict) -> None:
    """template/v2_template.go validatePipelineJobInputs: names must be inputs, values of the input's type."""
    declared = _declared(manifest)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise FakeError(400, f"parameters {unknown} are not inputs of the pipeline")
    kinds = {
        "STRING": str,
        "NUMBER_INTEGER": (int, float),
        "NUMBER_DOUBLE": (int, float),
        "BOOLEAN": bool,
        "LIST": list,
        "STRUCT": dict,
    }
    for name, value in parameters.items():
        expected = kinds.get(declared[name].get("parameterType", "STRING"), object)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise FakeError(400, f"parameter {name!r}: {value!r} is not a {declared[name].get('parameterType')}")


def _check_cron(cron: str | None) -> None:
    """robfig/cron's Parse as KFP calls it: 6 fields (seconds first) or a descriptor."""
    if not cron or (len(cron.split()) != 6 and not cron.startswith("@")):
        raise FakeError(400, f"Schedule cron is not a supported format: {cron!r}")


# -- list options -----------------------------------------------------------------------------------------------------
def _name_filter(query: dict[str, str]) -> str | None:
    """The value of an EQUALS predicate on display_name (kfp sends the operation as its enum name or number)."""
    if "filter" not in query:
        return None
    for predicate in json.loads(query["filter"]).get("predicates", []):
        if predicate.get("key") not in ("display_name", "name") or predicate.get("operation") not in ("EQUALS", 1):
            raise FakeError(400, f"unsupported filter predicate {predicate}")
        return predicate.get("string_value", predicate.get("stringValue"))
    return None


def _list(items: list[dict], query: dict[str, str], key: str, id_key: str, sort_key: str = "created_at") -> dict:
    sort_by = query.get("sort_by") or ""
    name, _, order = sort_by.partition(" ")
    descending = order.strip() == "desc"
    field_name = {"created_at": "created_at_s"}.get(name or sort_key, name or sort_key)
    ordered = sorted(items, key=lambda i: (i.get(field_name) or 0, i[id_key]), reverse=descending)
    size = int(query.get("page_size") or 0) or 20
    start = int(query.get("page_token") or 0)
    page = ordered[start : start + size]
    body: dict[str, Any] = {key: page, "total_size": len(items)}
    if start + size < len(items):
        body["next_page_token"] = str(start + size)
    return _drop_empty(body)


# -- API views of the internal objects --------------------------------------------------------------------------------
def api_pipeline(pipeline: dict) -> dict:
    return _drop_empty(
        {
            "pipeline_id": pipeline["pipeline_id"],
            "display_name": pipeline["display_name"],
            "name": pipeline["name"],
            "description": pipeline.get("description"),
            "namespace": pipeline.get("namespace"),
            "created_at": _rfc3339(pipeline["created_at_s"]),
        }
    )


def api_version(version: dict) -> dict:
    return _drop_empty(
        {
            "pipeline_id": version["pipeline_id"],
            "pipeline_version_id": version["pipeline_version_id"],
            "name": version["name"],
            "display_name": version["display_name"],
            "description": version.get("description"),
            "created_at": _rfc3339(version["created_at_s"]),
            "pipeline_spec": spec_struct(version["manifest"]),
        }
    )


def api_recurring_run(job: dict) -> dict:
    runtime = _drop_empty({"parameters": job.get("parameters"), "pipeline_root": job.get("pipeline_root")})
    return _drop_empty(
        {
            "recurring_run_id": job["recurring_run_id"],
            "display_name": job["display_name"],
            "description": job.get("description"),
            "service_account": job.get("service_account"),
            "created_at": _rfc3339(job["created_at_s"]),
            "updated_at": _rfc3339(job["updated_at_s"]),
            "max_concurrency": str(job["max_concurrency"]),
            "no_catchup": job.get("no_catchup"),
            "trigger": {"cron_schedule": {"cron": job["cron"]}},
            "runtime_config": runtime,
            "namespace": job.get("namespace"),
            "experiment_id": job.get("experiment_id"),
            "pipeline_version_reference": _drop_empty(
                {"pipeline_id": job["pipeline_id"], "pipeline_version_id": job.get("pipeline_version_id")}
            ),
            "status": "ENABLED" if job["enabled"] else "DISABLED",
            "mode": "ENABLE" if job["enabled"] else "DISABLE",
        }
    )


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
                f"Content-Type: {content_type}\r\n\r\n".encode() + raw
            )
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "uploadfile":
                    return {"file": part.get_payload(decode=True), "filename": part.get_filename()}
            raise FakeError(400, "Failed to read pipeline from file", upload=True)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise FakeError(400, f"body is not JSON: {error}") from error

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if self.server.latency_s:
            time.sleep(random.uniform(0, self.server.latency_s))
        self.server.hold(method, url.path, "before")
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
                self.server.fail_if_asked(method, url.path)
                status, response = self.server.route(method, url.path[len(PREFIX) :], query, body)
            if response is DELETING:  # DeleteJob's second step: the row
                self.server.hold(method, url.path, "mid_delete")
                with self.server.lock:
                    state.jobs.pop(url.path.rsplit("/", 1)[-1], None)
                status, response = 200, {}
        except FakeError as error:
            status, response = error.status, error.body()
        self.server.hold(method, url.path, "after")
        payload = json.dumps(response).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class FakeKfpHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        required_token: str | None = None,
        latency_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        list_barrier: int = 0,
        resolves_latest: bool = False,
        pauses: list[Pause] | None = None,
        failures: list[Failure] | None = None,
        recurring_run_ids: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), FakeKfpHandler)
        self.state = FakeKfpState(clock=clock)
        self.lock = threading.Lock()
        self.required_token = required_token
        self.latency_s = latency_s
        self.resolves_latest = resolves_latest
        self.failures = list(failures or [])
        # ids of new recurring runs (default uuid4; a test may choose them to decide same-second ties)
        self.recurring_run_ids = recurring_run_ids or (lambda: str(uuid.uuid4()))
        # the first `list_barrier` recurring-run listings wait for each other: racing clients all see the same
        # state before any of them acts
        self.pauses = list(pauses or [])
        if list_barrier:
            self.pauses.append(Pause("GET", "/recurringruns", list_barrier, limit=list_barrier))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKfpHttpServer:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kfp", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def fail_if_asked(self, method: str, path: str) -> None:
        """Raise the first matching `Failure` that is due (called under the lock)."""
        for failure in self.failures:
            if (method, path) != (failure.method, PREFIX + failure.path):
                continue
            failure.seen += 1
            if failure.skip < failure.seen <= failure.skip + failure.count:
                raise FakeError(failure.status, f"injected failure of {method} {path}")

    def hold(self, method: str, path: str, stage: str) -> None:
        """Wait at every matching pause (outside the lock, so the other racers' requests go through)."""
        for pause in self.pauses:
            with self.lock:
                if not pause.matches(method, path, stage) or (pause.limit is not None and pause.held >= pause.limit):
                    continue
                pause.held += 1
            pause.barrier.wait()

    # -- assertion helpers (API views, as a client would list them) ----------------------------------------------
    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.state.requests if r.method == method and r.path == PREFIX + path]

    def recurring_runs_named(self, name: str) -> list[dict]:
        with self.lock:
            return [api_recurring_run(j) for j in self.state.jobs.values() if j["display_name"] == name]

    def api_versions(self) -> list[dict]:
        with self.lock:
            return [api_version(v) for v in self.state.versions.values()]

    # -- routes ---------------------------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        state = self.state
        if parts == ["healthz"] and method == "GET":
            return 200, {
                "commit_sha": "unknown",
                "tag_name": "2.17.0",
                "multi_user": state.multi_user,
                "pipeline_store": "database",
            }
        if parts == ["experiments"]:
            return self._experiments(method, query, body)
        if parts[:1] == ["pipelines"]:
            return self._pipelines(method, parts[1:], query, body)
        if parts == ["runs"] and method == "POST":
            return 200, self._create_run(body)
        if parts[:1] == ["recurringruns"]:
            return self._recurring_runs(method, parts[1:], query, body)
        raise FakeError(404, f"no route {method} {path}")

    def _namespace(self, namespace: str | None) -> str:
        if self.state.multi_user and not namespace:
            raise FakeError(400, "namespace is required in multi-user mode")
        return namespace or ""

    def _experiments(self, method: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        state = self.state
        if method == "GET":
            name = _name_filter(query)
            items = [
                _drop_empty({k: v for k, v in e.items() if k != "created_at_s"}) | {"created_at_s": e["created_at_s"]}
                for e in state.experiments.values()
                if name is None or e["display_name"] == name
            ]
            listed = _list(items, query, "experiments", "experiment_id")
            for item in listed.get("experiments", []):
                item.pop("created_at_s")
            return 200, listed
        if method == "POST":
            if not body or not body.get("display_name"):
                raise FakeError(400, "Experiment must have a non-empty name")
            namespace = self._namespace(body.get("namespace"))
            if any(
                e["display_name"] == body["display_name"] and e["namespace"] == namespace
                for e in state.experiments.values()
            ):
                raise FakeError(409, f"Failed to create a new experiment: {body['display_name']} already exists")
            now = state.now()
            experiment = {
                "experiment_id": str(uuid.uuid4()),
                "display_name": body["display_name"],
                "namespace": namespace,
                "created_at": _rfc3339(now),
                "created_at_s": now,
                "storage_state": "AVAILABLE",
            }
            state.experiments[experiment["experiment_id"]] = experiment
            return 200, _drop_empty({k: v for k, v in experiment.items() if k != "created_at_s"})
        raise FakeError(405, f"{method} experiments")

    def _pipelines(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        state = self.state
        if not parts and method == "GET":
            name = _name_filter(query)
            items = [p for p in state.pipelines.values() if name is None or p["display_name"] == name]
            listed = _list(items, query, "pipelines", "pipeline_id")
            listed["pipelines"] = [api_pipeline(p) for p in listed.get("pipelines", [])]
            return 200, _drop_empty(listed)
        if parts == ["upload"] and method == "POST":
            name = query.get("display_name") or query.get("name") or (body or {}).get("filename")
            if any(p["display_name"] == name for p in state.pipelines.values()):
                raise FakeError(409, "Failed to create a pipeline and a pipeline version", upload=True)
            manifest = _read_pipeline_file(body["file"])
            pipeline = {
                "pipeline_id": str(uuid.uuid4()),
                "display_name": name,
                "name": name,
                "description": query.get("description"),
                "created_at_s": state.now(),
                "namespace": self._namespace(query.get("namespace")),
            }
            state.pipelines[pipeline["pipeline_id"]] = pipeline
            self._add_version(pipeline["pipeline_id"], name, manifest, query.get("description"))
            return 200, api_pipeline(pipeline)
        if parts == ["upload_version"] and method == "POST":
            pipeline_id = query.get("pipelineid")
            if pipeline_id not in state.pipelines:
                raise FakeError(400, "Failed to create a pipeline version", upload=True)
            name = query.get("display_name") or query.get("name") or (body or {}).get("filename")
            if any(v["display_name"] == name and v["pipeline_id"] == pipeline_id for v in state.versions.values()):
                raise FakeError(409, "Failed to create a pipeline version", upload=True)
            version = self._add_version(pipeline_id, name, _read_pipeline_file(body["file"]), query.get("description"))
            return 200, api_version(version)
        if len(parts) == 2 and parts[1] == "versions" and method == "GET":
            if parts[0] not in state.pipelines:
                raise FakeError(404, f"Pipeline {parts[0]} not found")
            items = [v for v in state.versions.values() if v["pipeline_id"] == parts[0]]
            listed = _list(items, query, "pipeline_versions", "pipeline_version_id")
            listed["pipeline_versions"] = [api_version(v) for v in listed.get("pipeline_versions", [])]
            return 200, _drop_empty(listed)
        raise FakeError(404, f"no route {method} pipelines/{'/'.join(parts)}")

    def _add_version(self, pipeline_id: str, name: str, manifest: str, description: str | None) -> dict:
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": str(uuid.uuid4()),
            "display_name": name,
            "name": name,
            "description": description,
            "created_at_s": self.state.now(),
            "manifest": manifest,
        }
        self.state.versions[version["pipeline_version_id"]] = version
        return version

    def latest_version(self, pipeline_id: str) -> dict:
        versions = [v for v in self.state.versions.values() if v["pipeline_id"] == pipeline_id]
        return max(versions, key=lambda v: (v["created_at_s"], v["pipeline_version_id"]))

    def _resolve(self, body: Any, allow_latest: bool) -> tuple[str, str | None, dict]:
        if not isinstance(body, dict) or not body.get("display_name"):
            raise FakeError(400, "Recurring run name is empty. Please specify a valid name")
        if body.get("pipeline_spec"):
            raise FakeError(400, "this fake serves runs of uploaded pipeline versions, not inline specs")
        if body.get("experiment_id") and body["experiment_id"] not in self.state.experiments:
            raise FakeError(404, f"Experiment {body['experiment_id']} not found")
        reference = body.get("pipeline_version_reference") or {}
        pipeline_id, version_id = reference.get("pipeline_id"), reference.get("pipeline_version_id") or None
        if version_id is None:
            if not allow_latest or pipeline_id not in self.state.pipelines:
                raise FakeError(400, "Cannot create a job with an empty pipeline ID")
            version = self.latest_version(pipeline_id)
            if self.resolves_latest:  # before 2.5: pinned to the latest version at creation (module docstring)
                version_id = version["pipeline_version_id"]
        else:
            version = self.state.versions.get(version_id)
            if version is None:
                raise FakeError(404, f"Pipeline version {version_id} not found")
            pipeline_id = version["pipeline_id"]
        _check_parameters(version["manifest"], (body.get("runtime_config") or {}).get("parameters") or {})
        return pipeline_id, version_id, version

    def _create_run(self, body: Any) -> dict:
        pipeline_id, version_id, _ = self._resolve(body, allow_latest=False)
        now = self.state.now()
        run = _drop_empty(
            {
                **body,
                "run_id": str(uuid.uuid4()),
                "created_at": _rfc3339(now),
                "state": "PENDING",
                "service_account": body.get("service_account") or DEFAULT_SERVICE_ACCOUNT,
                "pipeline_version_reference": {"pipeline_id": pipeline_id, "pipeline_version_id": version_id},
            }
        )
        self.state.runs[run["run_id"]] = run
        return run

    def _recurring_runs(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        state = self.state
        if not parts and method == "GET":
            name = _name_filter(query)
            experiment_id = query.get("experiment_id")
            items = [
                j
                for j in state.jobs.values()
                if (name is None or j["display_name"] == name)
                and (experiment_id is None or j.get("experiment_id") == experiment_id)
            ]
            listed = _list(items, query, "recurringRuns", "recurring_run_id")
            listed["recurringRuns"] = [api_recurring_run(j) for j in listed.get("recurringRuns", [])]
            return 200, _drop_empty(listed)
        if not parts and method == "POST":
            pipeline_id, version_id, _ = self._resolve(body, allow_latest=True)
            cron = ((body.get("trigger") or {}).get("cron_schedule") or {}).get("cron")
            _check_cron(cron)
            max_concurrency = int(body.get("max_concurrency") or 0)
            if not 1 <= max_concurrency <= 10:
                raise FakeError(
                    400,
                    f"Max concurrency of a recurring run must be at least 1 and at most 10. Received {max_concurrency}",
                )
            if body.get("mode") not in ("ENABLE", "DISABLE"):
                raise FakeError(400, f"Recurring run mode {body.get('mode')!r} is not ENABLE or DISABLE")
            now = state.now()
            runtime = body.get("runtime_config") or {}
            job = {
                "recurring_run_id": self.recurring_run_ids(),
                "display_name": body["display_name"],
                "description": body.get("description"),
                "experiment_id": body.get("experiment_id"),
                "namespace": self._namespace(body.get("namespace")) if state.multi_user else "",
                # resource_manager.go CreateJob: a pinned version goes through the template (default service
                # account); "latest at each trigger" is stored as given
                "service_account": body.get("service_account") or (DEFAULT_SERVICE_ACCOUNT if version_id else ""),
                "pipeline_id": pipeline_id,
                "pipeline_version_id": version_id,
                "parameters": runtime.get("parameters") or {},
                "pipeline_root": runtime.get("pipeline_root"),
                "cron": cron,
                "max_concurrency": max_concurrency,
                "no_catchup": bool(body.get("no_catchup")),
                "enabled": body["mode"] == "ENABLE",
                "created_at_s": now,
                "updated_at_s": now,
            }
            state.jobs[job["recurring_run_id"]] = job
            return 200, api_recurring_run(job)
        if len(parts) == 1:
            run_id, _, action = parts[0].partition(":")
            if run_id not in state.jobs:
                raise FakeError(
                    404,
                    f"Failed to delete recurring run {run_id}. Check if exists: "
                    f"ResourceNotFoundError: Job {run_id} not found",
                )
            job = state.jobs[run_id]
            if method == "DELETE" and not action:
                job["workflow_deleted"] = True  # DeleteJob: the ScheduledWorkflow first; the row in a 2nd step
                return 200, DELETING
            if method == "POST" and action in ("enable", "disable") and job.get("workflow_deleted"):
                reason = (  # ChangeJobMode's messages: the Get (enable) or the Patch (disable) failed
                    f"Failed to enable recurring run {run_id}. Check if the scheduled workflow exists"
                    if action == "enable"
                    else f"Failed to change recurring run's {run_id} mode to enable:false"
                )
                raise FakeError(500, f'{reason}: scheduledworkflows.kubeflow.org "{run_id}" not found')
            if method == "GET" and not action:
                return 200, api_recurring_run(job)
            if method == "POST" and action in ("enable", "disable"):
                job.update(enabled=action == "enable", updated_at_s=state.now())
                return 200, {}
        raise FakeError(404, f"no route {method} recurringruns/{'/'.join(parts)}")
