"""The chart's Grafana dashboard and Prometheus alerts query metrics the worker really exports.

No Prometheus runs here, so the queries are not evaluated: their metric names are read out of the
PromQL (dashboard/parley.json's exprs and template queries, the exprs of templates/prometheusrule.yaml)
and looked up in the /metrics of a real worker that has labelled utterances and dead-lettered one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from parley.connections import KafkaSettings, TopicSettings
from stream.contracts import Utterance
from stream.send import Message, messages_for, send_messages
from stream.tail import read

from .conftest import WorkerProcess

CHART = Path(__file__).resolve().parents[2] / "helm" / "parley"
DASHBOARD = CHART / "dashboards" / "parley.json"
RULES = CHART / "templates" / "prometheusrule.yaml"

# Words of PromQL that look like metric names but are not.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
_KEYWORDS |= {"group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Helm actions and Grafana variables allowed)."""
    text = re.sub(r"\{\{.*?\}\}", " ", expr, flags=re.S)  # Helm: {{ $sel }}, {{ .threshold }}
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', " ", text)  # strings
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries, [$__rate_interval] too
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$:])[A-Za-z_:][\w:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:  # a function or an aggregation
            continue
        names.add(match.group())
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows may hold their panels (when collapsed)


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template-variable queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", []) if "expr" in t]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        # Grafana's label_values(metric, label): the last argument is a label, not a metric.
        exprs.append(re.sub(r"^label_values\((.*),\s*\w+\s*\)$", r"\1", query.strip()))
    return exprs


def rule_queries() -> list[str]:
    """The expr of every alert in the PrometheusRule template, block scalars included."""
    lines = RULES.read_text().splitlines()
    exprs = []
    for i, line in enumerate(lines):
        found = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not found:
            continue
        indent, value = len(found.group(1)), found.group(2).strip()
        if value[:1] not in ("|", ">"):
            exprs.append(value)
            continue
        block = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following)
        exprs.append("\n".join(block))
    return exprs


def exported_names(exposition: str) -> set[str]:
    """Names a Prometheus scrape of ``exposition`` can select: every sample's name, every HELP/TYPE
    name (so a labelled counter with no sample yet counts), and a histogram's _bucket/_sum/_count."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            _, kind, name, *rest = line.split()
            names.add(name)
            if kind == "TYPE" and rest == ["histogram"]:
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][\w:]*", line).group())  # type: ignore[union-attr]
    return names


def unknown_names(exprs: list[str], exposition: str) -> dict[str, set[str]]:
    """The expressions that select a name ``exposition`` does not have, with those names."""
    exported = exported_names(exposition)
    unknown = {expr: metric_names(expr) - exported for expr in exprs}
    return {expr: names for expr, names in unknown.items() if names}


def test_metric_names_are_read_out_of_promql() -> None:
    """Functions, aggregations, grouping labels, matchers, ranges and Helm actions are not names."""
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(parley_inference_seconds_bucket{job=~"$job"}'
        "[$__rate_interval]))) > {{ .Values.x }} and on (instance) parley_ready offset 5m == 0 "
        "or absent(parley_ready{ {{- $sel -}} }) unless sum without (reason) (x_total) > bool 1e3"
    )
    assert metric_names(expr) == {"parley_inference_seconds_bucket", "parley_ready", "x_total"}


def test_a_misspelt_metric_name_is_reported() -> None:
    """A name the scrape lacks is reported; a labelled counter with no sample yet (HELP/TYPE only)
    and a histogram's series are found."""
    exposition = "\n".join(
        [
            "# HELP parley_events_dlq_total Messages sent to the DLQ, by reason.",
            "# TYPE parley_events_dlq_total counter",
            "# TYPE parley_inference_seconds histogram",
            'parley_inference_seconds_bucket{le="0.001"} 0.0',
            "parley_ready 1.0",
        ]
    )
    good = [
        "sum by (reason) (rate(parley_events_dlq_total[5m]))",
        "histogram_quantile(0.5, sum by (le) (rate(parley_inference_seconds_bucket[5m])))",
        "sum(rate(parley_inference_seconds_sum[5m])) / sum(rate(parley_inference_seconds_count[5m]))",
        "parley_ready == 0",
    ]
    assert unknown_names(good, exposition) == {}
    assert unknown_names(["sum(rate(parley_events_dql_total[5m]))"], exposition) == {
        "sum(rate(parley_events_dql_total[5m]))": {"parley_events_dql_total"}
    }


def test_the_dashboard_and_the_alerts_have_queries_to_check() -> None:
    """The readers find the queries (a reader that found none would make the scrape test vacuous):
    every panel with targets uses the ${datasource} variable, and every alert has an expr."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert {"datasource", "namespace", "job"} <= {v["name"] for v in dashboard["templating"]["list"]}
    for panel in _panels(dashboard["panels"]):
        if panel.get("targets"):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    assert len({name for e in dashboard_queries() for name in metric_names(e)}) >= 15
    alerts = re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), flags=re.M)
    assert len(rule_queries()) == len(alerts) >= 8
    assert all(metric_names(e) for e in rule_queries())


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


@pytest.mark.integration
@pytest.mark.slow
async def test_every_metric_the_dashboard_and_the_alerts_query_is_exported_by_a_worker(
    kafka_settings: KafkaSettings, worker_topics: TopicSettings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """A worker that labelled utterances and dead-lettered one exports every metric name used by the
    dashboard's queries and by the alerts' exprs."""
    worker = worker_factory()
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    run = uuid.uuid4().hex[:6]
    good = [
        Utterance(conversation_id=f"c-{run}", utterance_id=f"u-{run}-{turn}", turn=turn, text=text)
        for turn, text in enumerate(["hello, my order never arrived", "thanks, that helps", "bye"])
    ]
    messages = [*messages_for(good), Message(f"c-{run}".encode(), b"this is not json")]
    await send_messages(kafka_settings, worker_topics.utterances, messages)
    for topic, n in ((worker_topics.utterance_labels, len(good)), (worker_topics.utterances_dlq, 1)):
        got = [
            r async for r in read(kafka_settings, topic, start="beginning", max_messages=n, idle_timeout_s=60)
        ]
        assert len(got) == n, f"{topic}: {len(got)} of {n} records\n{worker.tail()}"

    deadline = time.monotonic() + 30  # the commit after the batch lands a moment later
    while True:
        exposition = await asyncio.to_thread(scrape, worker.web_port)
        seen = exported_names(exposition)
        dead = 'parley_events_dlq_total{reason="not_json"}' in exposition
        if dead and re.search(r"^parley_committed_offset\{", exposition, flags=re.M):
            break
        assert time.monotonic() < deadline, f"no DLQ sample or committed offset after 30 s:\n{exposition}"
        await asyncio.sleep(0.5)

    for what, exprs in (("dashboard", dashboard_queries()), ("alert", rule_queries())):
        unknown = unknown_names(exprs, exposition)
        assert not unknown, f"{what} queries name metrics the worker does not export: {unknown}"
    assert "parley_engine_info" in seen  # the samples behind the panels' legends are there too
    assert re.search(r"^parley_consumer_lag\{", exposition, flags=re.M)
