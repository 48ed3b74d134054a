"""Checks of one installed release of the chart on the local control plane (scripts/k8s.sh).

    python3 scripts/helm_install_check.py installed --release R --namespace NS
    python3 scripts/helm_install_check.py rolled --release R --namespace NS --before BEFORE.json
    python3 scripts/helm_install_check.py gone --release R --namespace NS --manifest MANIFEST.yaml
    python3 scripts/helm_install_check.py snapshot --release R --namespace NS > BEFORE.json

`installed`: every object of `helm get manifest` exists in the API server; every pod of the release
is scheduled (kwok runs it); GPU workers sit on GPU nodes only and CPU workers on CPU nodes only;
each GPU kind's watcher on a node with that kind's product label, the CPU watcher on a CPU node;
the ScaledObject, the PodDisruptionBudget and every CronJob were accepted, and a run started from
each CronJob lands on a GPU node when it asks for a GPU and on a CPU node otherwise. `rolled`: after
an upgrade, the worker Deployment runs a new pod template and its pods are ready. `gone`: after an uninstall,
none of the manifest's objects and no pod of the release is left, except what the chart marks
``helm.sh/resource-policy: keep`` (the registry's claim: bundles outlive releases), which must be.
Standard library only; kubectl and helm come from PATH (scripts/helm-install.sh puts the built ones
there).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GPU = "nvidia.com/gpu.present"


@dataclass(frozen=True)
class Rendered:
    """One object of the release's manifest."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    """Set when the chart puts it outside the release's namespace."""
    kept: bool
    """The chart asks Helm to keep it on uninstall (helm.sh/resource-policy: keep)."""

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


def kubectl(*args: str, check: bool = True) -> Any:
    done = subprocess.run(["kubectl", *args, "-o", "json"], capture_output=True, text=True)
    if done.returncode != 0:
        if check:
            sys.exit(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return None
    return json.loads(done.stdout)


def manifest_objects(release: str, namespace: str, path: str | None = None) -> list[Rendered]:
    """Every object of the release's manifest (helm get manifest, or a saved copy at ``path``)."""
    text = (
        Path(path).read_text(encoding="utf-8")
        if path
        else subprocess.run(
            ["helm", "get", "manifest", release, "-n", namespace], capture_output=True, text=True, check=True
        ).stdout
    )
    objects = []
    for doc in text.split("\n---"):
        fields: dict[str, str] = {}
        in_metadata = False
        for line in doc.splitlines():
            if line.startswith("apiVersion:") or line.startswith("kind:"):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
            elif line.startswith("metadata:"):
                in_metadata = True
            elif in_metadata and line.startswith("  name:") and "name" not in fields:
                fields["name"] = line.partition(":")[2].strip().strip('"')
            elif in_metadata and line.startswith("  namespace:") and "namespace" not in fields:
                fields["namespace"] = line.partition(":")[2].strip().strip('"')
            elif line and not line.startswith(" "):
                in_metadata = False
        if {"apiVersion", "kind", "name"} <= fields.keys():
            objects.append(
                Rendered(
                    fields["apiVersion"],
                    fields["kind"],
                    fields["name"],
                    fields.get("namespace"),
                    "helm.sh/resource-policy: keep" in doc,
                )
            )
    return objects


def get(obj: Rendered, namespace: str) -> Any:
    """The object, or None when the API server does not have it."""
    where = obj.namespace or namespace
    return kubectl("get", resource(obj.api_version, obj.kind), obj.name, "-n", where, check=False)


def resource(api_version: str, kind: str) -> str:
    group = api_version.split("/")[0] if "/" in api_version else ""
    return f"{kind.lower()}.{group}" if group else kind.lower()


def release_pods(release: str, namespace: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kubectl(
        "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}"
    )["items"]
    return pods


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def wait_pods_ready(
    release: str, namespace: str, component: str, timeout_s: float = 120
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        pods = [
            p
            for p in release_pods(release, namespace)
            if p["metadata"]["labels"].get("app.kubernetes.io/component") == component
            and not p["metadata"].get("deletionTimestamp")
        ]
        ready = [p for p in pods if is_ready(p)]
        if pods and len(ready) == len(pods):
            return pods
        if time.monotonic() > deadline:
            names = [p["metadata"]["name"] for p in pods]
            sys.exit(f"{component} pods not all ready after {timeout_s:.0f} s: {names}")
        time.sleep(2)


def check_installed(release: str, namespace: str) -> None:
    failures = []
    objects = manifest_objects(release, namespace)
    for obj in objects:
        if get(obj, namespace) is None:
            failures.append(f"{obj.label} was rendered but is not in the API server")
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in kubectl("get", "nodes")["items"]}
    deployments = {
        d["metadata"]["name"]: d
        for d in kubectl(
            "get", "deployments", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}"
        )["items"]
    }
    pods = release_pods(release, namespace)
    for pod in pods:
        name, labels = pod["metadata"]["name"], pod["metadata"]["labels"]
        node = pod["spec"].get("nodeName")
        if not node:
            failures.append(f"pod {name} is not scheduled: {pod['status'].get('conditions')}")
            continue
        on_gpu = nodes[node].get(GPU) == "true"
        component = labels.get("app.kubernetes.io/component")
        containers = pod["spec"]["containers"]
        wants_gpu = any("nvidia.com/gpu" in (c.get("resources", {}).get("limits") or {}) for c in containers)
        if component == "worker" and wants_gpu != on_gpu:
            failures.append(f"worker {name} ({'GPU' if wants_gpu else 'CPU'} profile) is on {node}")
        if component == "watcher":
            kind = labels.get("parley.dev/node-kind")
            selector = pod["spec"].get("nodeSelector") or {}
            if kind == "cpu" and on_gpu:
                failures.append(f"the CPU watcher {name} is on the GPU node {node}")
            if kind != "cpu" and (not on_gpu or any(nodes[node].get(k) != v for k, v in selector.items())):
                failures.append(f"the {kind} watcher {name} is on {node}, which is not a {kind} node")
    for d in deployments.values():
        status = d.get("status", {})
        if status.get("readyReplicas", 0) < d["spec"].get("replicas", 1):
            failures.append(f"deployment {d['metadata']['name']} is not ready: {status}")
    for obj in objects:
        if obj.kind == "CronJob":
            failures += run_once(obj.name, namespace, nodes)
    kinds = {obj.kind for obj in objects}
    print(
        f"{release}: {len(objects)} objects ({', '.join(sorted(kinds))}), {len(pods)} pods on "
        f"{sorted({p['spec'].get('nodeName') for p in pods})}"
    )
    if failures:
        sys.exit("\n".join(failures))


def run_once(cronjob: str, namespace: str, nodes: dict[str, dict[str, str]]) -> list[str]:
    """Start a Job from the CronJob, as its schedule would, and check where its pod lands: on a GPU
    node when it asks for a GPU, on a CPU node otherwise. The Job is deleted afterwards."""
    job = f"{cronjob[:40]}-check"
    done = subprocess.run(
        ["kubectl", "create", "job", job, f"--from=cronjob/{cronjob}", "-n", namespace],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return [f"could not start a job from cronjob {cronjob}: {done.stderr.strip()}"]
    try:
        deadline = time.monotonic() + 60
        while True:
            pods = kubectl("get", "pods", "-n", namespace, "-l", f"job-name={job}")["items"]
            placed = [p for p in pods if p["spec"].get("nodeName")]
            if placed:
                break
            if time.monotonic() > deadline:
                return [f"the pod of a job from cronjob {cronjob} was never scheduled"]
            time.sleep(1)
        pod = placed[0]
        node = pod["spec"]["nodeName"]
        limits = [c.get("resources", {}).get("limits") or {} for c in pod["spec"]["containers"]]
        wants_gpu = any("nvidia.com/gpu" in lim for lim in limits)
        print(f"  a run of cronjob {cronjob} ({'GPU' if wants_gpu else 'CPU'}) was scheduled on {node}")
        if wants_gpu != (nodes[node].get(GPU) == "true"):
            return [f"a run of cronjob {cronjob} ({'GPU' if wants_gpu else 'CPU'}) landed on {node}"]
        return []
    finally:
        subprocess.run(
            ["kubectl", "delete", "job", job, "-n", namespace, "--cascade=foreground", "--wait"],
            capture_output=True,
        )


def snapshot(release: str, namespace: str) -> dict[str, Any]:
    workers = wait_pods_ready(release, namespace, "worker")
    return {
        "template_hash": sorted({p["metadata"]["labels"].get("pod-template-hash") for p in workers}),
        "pods": sorted(p["metadata"]["name"] for p in workers),
    }


def check_rolled(release: str, namespace: str, before: dict[str, Any]) -> None:
    deadline = time.monotonic() + 180
    while True:
        now = snapshot(release, namespace)
        if now["template_hash"] and not set(now["template_hash"]) & set(before["template_hash"]):
            break
        if time.monotonic() > deadline:
            sys.exit(
                f"the worker did not roll: template hash {before['template_hash']} → {now['template_hash']}"
            )
        time.sleep(2)
    print(f"{release}: the worker rolled, pod template {before['template_hash']} → {now['template_hash']}")


def check_gone(release: str, namespace: str, manifest: str) -> None:
    objects = manifest_objects(release, namespace, manifest)
    deadline = time.monotonic() + 120
    while True:
        present = [obj for obj in objects if get(obj, namespace) is not None]
        left = [obj.label for obj in present if not obj.kept]
        left += [f"Pod/{p['metadata']['name']}" for p in release_pods(release, namespace)]
        gone = [obj.label for obj in objects if obj.kept and obj not in present]
        if gone:
            sys.exit(f"helm uninstall removed what the chart asks it to keep: {gone}")
        if not left:
            kept = sorted(obj.label for obj in objects if obj.kept)
            print(
                f"{release}: uninstalled, nothing left"
                + (f" but what the chart keeps: {kept}" if kept else "")
            )
            return
        if time.monotonic() > deadline:
            sys.exit(f"left after helm uninstall: {left}")
        time.sleep(2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("check", choices=["installed", "snapshot", "rolled", "gone"])
    p.add_argument("--release", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--before", help="snapshot JSON (rolled)")
    p.add_argument("--manifest", help="the manifest as installed (gone)")
    a = p.parse_args()
    if a.check == "installed":
        check_installed(a.release, a.namespace)
    elif a.check == "snapshot":
        print(json.dumps(snapshot(a.release, a.namespace)))
    elif a.check == "rolled":
        check_rolled(a.release, a.namespace, json.loads(Path(a.before).read_text(encoding="utf-8")))
    else:
        check_gone(a.release, a.namespace, a.manifest)


if __name__ == "__main__":
    main()
