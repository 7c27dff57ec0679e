"""Readers for the deployment files (compose, Kubernetes, Prometheus, Grafana) and the settings they must match.

Shared by the unit tests in this folder and tests/integration/deploy; nothing here starts anything.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import subprocess
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ("intake", "dispatch", "tracking", "reporting", "notifications")
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S_DIR = ROOT / "deploy" / "k8s"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "hazard-dispatch.json"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
TOPICS_SCRIPT = ROOT / "deploy" / "kafka" / "create-topics.sh"
OPERATIONS_DOC = ROOT / "docs" / "OPERATIONS.md"

# Environment variables a container may carry that are not service settings, and who reads them.
NON_SETTINGS_ENV = {
    "SERVICE": "deploy/docker/entrypoint.sh and healthcheck.py: which service the image runs",
    "HAZARD_DATABASE_URL": "python -m shared.migrate: the database to migrate",
    **{
        f"HAZARD_{service.upper()}_DB_PASSWORD": f"python -m shared.migrate: the password of role hazard_{service}"
        for service in SERVICES
    },
}
# Series Prometheus makes itself, not exported by any service.
PROMETHEUS_OWN_METRICS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"})
# Grafana's interval variables, replaced by a plain duration before an expression is checked.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


# -- YAML and JSON -----------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_compose() -> dict[str, Any]:
    """docker-compose.yml with anchors and merge keys resolved."""
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def k8s_files() -> list[Path]:
    """The Kubernetes manifests, in apply order."""
    return sorted(K8S_DIR.glob("*.yaml"))


def load_k8s() -> list[dict[str, Any]]:
    """Every document of every manifest (empty documents dropped)."""
    docs: list[dict[str, Any]] = []
    for path in k8s_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
                docs.append(doc)
    return docs


def k8s_object(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of a kind and name; fails naming what is missing."""
    found = [d for d in docs if d.get("kind") == kind and d.get("metadata", {}).get("name") == name]
    assert len(found) == 1, f"expected one {kind} {name!r} in deploy/k8s, found {len(found)}"
    return found[0]


def load_dashboard() -> dict[str, Any]:
    """The Grafana dashboard JSON."""
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# -- settings ----------------------------------------------------------------------------------


def settings_class(service: str) -> type[ServiceSettings]:
    """The settings class defined in services/<service>/settings.py (found, not named here)."""
    module = importlib.import_module(f"services.{service}.settings")
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, ServiceSettings)
        and obj is not ServiceSettings
        and obj.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"services/{service}/settings.py defines {len(classes)} settings classes"
    return classes[0]


def env_prefix(service: str) -> str:
    """The env prefix of a service's settings, e.g. ``DISPATCH__``."""
    prefix = settings_class(service).model_config.get("env_prefix", "")
    assert prefix, f"{service}: settings class has no env_prefix"
    return str(prefix).upper()


def _section_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's type holds directly (``Model`` or ``Model | None``)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _section_models(arg)]
    if origin is typing.Annotated:
        return _section_models(typing.get_args(annotation)[0])
    return []


@dataclass(frozen=True)
class EnvField:
    """One environment variable a settings class reads."""

    name: str
    required: bool


def settings_env_fields(
    model: type[BaseModel], prefix: str = "", *, parent_required: bool = True
) -> Iterator[EnvField]:
    """Every env var name (upper case, ``__`` nesting) of a settings model, walked recursively.

    A nested section is read both field by field (``KAFKA__BOOTSTRAP_SERVERS``) and whole as
    JSON (``KAFKA``); list and scalar fields are leaves.
    """
    for name, info in model.model_fields.items():
        env = f"{prefix}{name}".upper()
        required = parent_required and info.is_required()
        sections = _section_models(info.annotation)
        yield EnvField(env, required and not sections)
        for section in sections:
            yield from settings_env_fields(section, env + "__", parent_required=required)


def service_env_fields(service: str) -> dict[str, EnvField]:
    """Env var name (with the service's prefix) -> field, for one service."""
    prefix = env_prefix(service)
    return {prefix + f.name: f for f in settings_env_fields(settings_class(service))}


def required_env(service: str) -> set[str]:
    """The env vars a service cannot start without (no default anywhere on the path)."""
    return {name for name, f in service_env_fields(service).items() if f.required}


def service_of_env(name: str) -> str | None:
    """Which service's settings an env var belongs to, by its prefix (case-insensitive)."""
    for service in SERVICES:
        if name.upper().startswith(env_prefix(service)):
            return service
    return None


def check_env(owner: str, env: Mapping[str, str]) -> list[str]:
    """Problems with one container's environment: unknown settings names, foreign or unexplained vars."""
    problems = []
    for name in env:
        service = service_of_env(name)
        if service is None:
            if name not in NON_SETTINGS_ENV:
                problems.append(
                    f"{owner}: {name} is neither a service setting nor one of {sorted(NON_SETTINGS_ENV)}"
                )
            continue
        if name.upper() not in service_env_fields(service):
            known = ", ".join(sorted(service_env_fields(service)))
            problems.append(
                f"{owner}: {name} is not a field of {settings_class(service).__name__} (known: {known})"
            )
    return problems


# -- image -------------------------------------------------------------------------------------


def image_tree(tmp_path: Path) -> Path:
    """/app as the Dockerfile's runtime stage lays it out: the source directories it copies, nothing else."""
    runtime = DOCKERFILE.read_text().split("AS runtime", 1)[1]
    copied = re.findall(r"^COPY (?:--chown=\S+ )?(\S+) \./(\S+)$", runtime, re.MULTILINE)
    assert copied, "the runtime stage copies no source directory"
    app = tmp_path / "app"
    for source, target in copied:
        assert source == target, f"COPY {source} ./{target}: the layout should mirror the repository"
        shutil.copytree(ROOT / source, app / target, ignore=shutil.ignore_patterns("__pycache__"))
    return app


# -- compose -----------------------------------------------------------------------------------


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment as a dict (mapping or list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` substitution."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        whole = match.group(0)
        if name in variables:
            return variables[name]
        if ":-" in whole:
            return whole.split(":-", 1)[1][:-1]
        raise AssertionError(f"compose needs ${{{name}}} and no value was given for it")

    return _INTERPOLATION.sub(replace, value)


def is_one_shot(service: dict[str, Any]) -> bool:
    """A compose job that runs once (``restart: "no"``)."""
    return str(service.get("restart", "no")) == "no"


# -- kubernetes --------------------------------------------------------------------------------


def k8s_container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment: ``env`` plus every key of the ConfigMaps and Secrets in ``envFrom``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = k8s_object(docs, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
        else:
            secret = k8s_object(docs, "Secret", source["secretRef"]["name"])
            data = secret.get("stringData") or secret.get("data") or {}
        env.update({str(k): str(v) for k, v in data.items()})
    for item in container.get("env", []):
        env[item["name"]] = str(
            item.get("value", "<from " + next(iter(item.get("valueFrom", {"?": 0}))) + ">")
        )
    return env


# -- topics ------------------------------------------------------------------------------------

_CREATE_TOPIC = re.compile(r"^create_topic\s+(\S+)\s+(\d+)\s+(-?\d+)\s*$", re.MULTILINE)


def scripted_topics(script: str) -> dict[str, tuple[int, int]]:
    """Topic -> (partitions, retention.ms) from the ``create_topic`` calls of create-topics.sh."""
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in _CREATE_TOPIC.finditer(script)}


# -- PromQL ------------------------------------------------------------------------------------

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
)
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(\s*\()?")


def grafana_to_promql(expr: str) -> str:
    """A panel expression with Grafana's interval variables replaced by durations."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def balanced(expr: str) -> bool:
    """Parentheses, brackets and braces nest properly (outside strings)."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and numbers dropped)."""
    text = _STRING.sub('""', grafana_to_promql(expr))
    text = _SELECTOR.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS or name.lower() in {"inf", "nan"}:
            continue
        names.add(name)
    return names


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/alerts.yml."""
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) for every query of every panel, rows included."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel.get("title", "?"), target.get("expr", "")))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    return found


def used_metrics() -> dict[str, list[str]]:
    """Metric name -> where it is used (alert or panel), across the alert rules and the dashboard."""
    used: dict[str, list[str]] = {}
    for rule in alert_rules():
        for name in promql_metric_names(rule["expr"]):
            used.setdefault(name, []).append(f"alert {rule.get('alert') or rule.get('record')}")
    for title, expr in dashboard_targets(load_dashboard()):
        for name in promql_metric_names(expr):
            used.setdefault(name, []).append(f"panel {title!r}")
    return used


_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$")
_SAMPLE_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


def exported_series_names(exposition: str) -> set[str]:
    """Every series name a /metrics page can produce, including labelled metrics with no sample yet.

    prometheus_client prints HELP/TYPE for a labelled metric before its first use, so names come
    from the ``# TYPE`` lines, expanded with the suffixes of their type, plus any sample names.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        type_match = _TYPE_LINE.match(line)
        if type_match:
            family, kind = type_match.groups()
            base = family.removesuffix("_total") if kind == "counter" else family
            names.update({family, base})
            names.update(base + suffix for suffix in _SUFFIXES.get(kind, ()))
            continue
        sample = _SAMPLE_LINE.match(line)
        if sample:
            names.add(sample.group(1))
    return names


# -- promtool ----------------------------------------------------------------------------------


def promtool() -> str | None:
    """Path of promtool (Debian's `prometheus` package; scripts/ensure-promtool.sh installs it), or None."""
    return shutil.which("promtool")


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; the caller asserts on the result."""
    tool = promtool()
    assert tool is not None
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False)
