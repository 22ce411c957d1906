"""Static checks of deploy/: compose, Kubernetes manifests and Dockerfiles parse, reference files that
exist, and run `finsent` subcommands with settings the real CLI and config loader accept.

No Docker engine or cluster is needed (none is available where these were written); what that leaves
unverified is listed in README.md.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from finsent.cli import build_parser
from finsent.config import CONFIG_ENV, OPTIONS, OPTIONS_BY_NAME, load_config
from tests.integration.prometheus_fixture import DEPLOY, ROOT

K8S = DEPLOY / "k8s"
# The GPU overlay: the base plus GPU classify replicas and their model volume. A sibling of the base,
# not inside it: kustomize refuses an overlay whose base directory contains it (a cycle).
GPU = DEPLOY / "k8s-gpu"
DOCKER = DEPLOY / "docker"
KNOWN_ENV = {option.env for option in OPTIONS} | {CONFIG_ENV}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted([*K8S.glob("*.yaml"), *GPU.glob("*.yaml")]):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in k8s_documents() if document["kind"] == kind]


def host_path(value: str, mounts: Mapping[str, Path]) -> str:
    """A container path rewritten to the repository file mounted there (unchanged when not mounted)."""
    for target, source in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if value == target or value.startswith(target.rstrip("/") + "/"):
            return str(source / Path(value).relative_to(target)) if value != target else str(source)
    return value


def check_finsent_command(argv: list[str], env: Mapping[str, str], mounts: Mapping[str, Path]) -> str:
    """Parse argv with finsent's own parser; for `run`, load and validate the settings the way the
    process would (files resolved through the mounts) and the alert files its stage reads. The stage."""
    for name in env:
        if name.startswith("FINSENT_"):
            assert name in KNOWN_ENV, f"unknown setting variable {name}"
    local_argv = [host_path(arg, mounts) for arg in argv]
    args = build_parser().parse_args(local_argv)
    if args.command == "produce":
        assert Path(args.file).is_file(), f"produce --file {args.file} does not exist"
        return "produce"
    assert args.command == "run", argv
    local_env = {name: host_path(str(value), mounts) for name, value in env.items()}
    flags = {option.name: getattr(args, option.name, None) for option in OPTIONS}
    # The container's environment only (not this process's); UsageError = exit 2 in the container.
    config = load_config(flags, args.config, environ=local_env)
    if config.stage in ("all", "alerts"):
        from finsent.alerts_stage import load_alert_files

        rules, subscriptions = load_alert_files(config)
        assert config.rules is None or rules
        assert config.subscriptions is None or subscriptions
    return config.stage


# ---------------------------------------------------------------- compose


def test_compose_has_the_whole_stack_with_kafka_in_kraft_mode() -> None:
    services = compose()["services"]
    assert {"kafka", "kafka-init", "finsent", "replay", "prometheus", "alertmanager", "grafana"} <= set(
        services
    )
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert not any("zookeeper" in name for name in services)
    assert not any("ZOOKEEPER" in key for key in kafka["environment"])
    # finsent waits for its topics; the topics script creates the ones finsent reads and writes.
    finsent = services["finsent"]
    assert finsent["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    script = services["kafka-init"]["command"][0]
    for topic in ("news.raw", "news.scored", "news.dlq", "news.windows", "alerts"):
        assert f"{topic}:" in script, topic


def compose_mounts(service: Mapping[str, Any]) -> dict[str, Path]:
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def test_compose_references_files_that_exist() -> None:
    data = compose()
    named = set(data.get("volumes", {}))
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: named volume {source} not declared"
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == ROOT
            assert (context / service["build"]["dockerfile"]).is_file()
        for dependency in service.get("depends_on", []):
            assert dependency in data["services"], f"{name} depends on unknown {dependency}"


def test_compose_finsent_commands_are_valid_cli_invocations() -> None:
    services = compose()["services"]
    stages = {}
    for name, service in services.items():
        if not service.get("image", "").startswith("finsent:"):
            continue
        command = service["command"]
        assert isinstance(command, list) and "entrypoint" not in service, name
        stages[name] = check_finsent_command(command, service.get("environment", {}), compose_mounts(service))
    assert stages == {"finsent": "all", "finsent-gpu": "classify", "replay": "produce"}
    assert "9464:9464" in services["finsent"]["ports"]


def test_prometheus_scrapes_every_compose_service_that_serves_metrics() -> None:
    """Every `finsent run` service (the GPU replica under --profile gpu too) is a target of job finsent,
    found by DNS so that a service that is not running is no target (not a target that is down)."""
    services = compose()["services"]
    serving = {
        name
        for name, service in services.items()
        if service.get("image", "").startswith("finsent:") and service["command"][0] == "run"
    }
    assert serving == {"finsent", "finsent-gpu"}
    (scrape,) = [
        job
        for job in yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
        if job["job_name"] == "finsent"
    ]
    assert "static_configs" not in scrape
    (dns,) = scrape["dns_sd_configs"]
    assert dns["type"] == "A" and set(dns["names"]) == serving
    assert dns["port"] == OPTIONS_BY_NAME["metrics_port"].default == 9464  # the port every replica serves


def test_compose_services_without_an_http_server_disable_the_image_healthcheck() -> None:
    """The images' HEALTHCHECK polls /healthz; only `finsent run` serves it (`produce` would be unhealthy)."""
    for name, service in compose()["services"].items():
        if not service.get("image", "").startswith("finsent:"):
            continue
        serves_http = service["command"][0] == "run"
        disabled = service.get("healthcheck", {}).get("disable") is True
        assert disabled != serves_http, f"{name}: healthcheck {service.get('healthcheck')}"


def test_docker_compose_config_when_available() -> None:
    """`docker compose config` needs only the CLI plugin, no engine; skipped where the plugin is absent."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip("docker CLI has no compose plugin here")
    result = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- Kubernetes


def test_every_manifest_parses_with_kind_and_name() -> None:
    documents = list(k8s_documents())
    assert len(documents) >= 10
    for path, document in documents:
        assert document.get("apiVersion") and document.get("kind"), path
        if document["kind"] != "Kustomization":
            assert document["metadata"]["name"], path


def deployments() -> dict[str, dict[str, Any]]:
    return {document["metadata"]["name"]: document for document in k8s_kind("Deployment")}


def k8s_mounts(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Path]:
    """Container mount paths of ConfigMap volumes -> deploy/k8s/config (what the generator packs)."""
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts = {}
    for mount in container.get("volumeMounts", []):
        if "configMap" in volumes[mount["name"]]:
            assert volumes[mount["name"]]["configMap"]["name"] == "finsent-config"
            mounts[mount["mountPath"]] = K8S / "config"
    return mounts


def test_deployments_run_one_stage_each_with_valid_settings() -> None:
    stages = {}
    for name, deployment in deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert "command" not in container, "the image's ENTRYPOINT is finsent"
        env = {item["name"]: item["value"] for item in container.get("env", [])}
        stages[name] = check_finsent_command(container["args"], env, k8s_mounts(pod, container))
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels["app.kubernetes.io/component"] == stages[name]
        # Non-root, probes on the metrics port.
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"metrics": 9464}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert stages == {
        "finsent-classify": "classify",
        "finsent-monitor": "monitor",
        "finsent-alerts": "alerts",
        "finsent-classify-gpu": "classify",
    }
    # State lives on volumes; single-writer stages never overlap during a rollout.
    for name in ("finsent-monitor", "finsent-alerts"):
        deployment = deployments()[name]
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        pod = deployment["spec"]["template"]["spec"]
        claims = {
            v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        }
        assert claims & {pvc["metadata"]["name"] for pvc in k8s_kind("PersistentVolumeClaim")}, name


def quantity_mib(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", value)
    assert match, value
    return float(match.group(1)) * (1024 if match.group(2) == "Gi" else 1)


def test_classify_resources_match_the_measured_footprint() -> None:
    """Measured: peak RSS of one classify process 260-601 MB; ~265 msg/s on 2 cores (README.md)."""
    classify = deployments()["finsent-classify"]
    (container,) = classify["spec"]["template"]["spec"]["containers"]
    resources = container["resources"]
    peak_rss_mib = 600e6 / 2**20
    assert peak_rss_mib <= quantity_mib(resources["requests"]["memory"]) <= 1.5 * peak_rss_mib
    assert quantity_mib(resources["limits"]["memory"]) > quantity_mib(resources["requests"]["memory"])
    args = container["args"]
    threads = args[args.index("--threads") + 1]
    assert resources["requests"]["cpu"] == threads == "2"  # ONNX Runtime threads = the cores asked for


def test_service_monitor_pdb_and_autoscaler_select_the_right_pods() -> None:
    (service,) = k8s_kind("Service")
    (monitor,) = k8s_kind("ServiceMonitor")
    (budget,) = k8s_kind("PodDisruptionBudget")
    (scaler,) = k8s_kind("ScaledObject")
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments().items()}
    for name, labels in pods.items():
        assert service["spec"]["selector"].items() <= labels.items(), f"Service does not select {name}"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {port["name"] for port in service["spec"]["ports"]} >= {
        e["port"] for e in monitor["spec"]["endpoints"]
    }
    # job="finsent", which the alerting rules use.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "finsent"
    covered = [
        name
        for name, labels in pods.items()
        if budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert sorted(covered) == ["finsent-classify", "finsent-classify-gpu"]
    assert scaler["spec"]["scaleTargetRef"]["name"] == "finsent-classify"
    (trigger,) = scaler["spec"]["triggers"]
    settings = yaml.safe_load((K8S / "config" / "settings.yaml").read_text())
    assert trigger["type"] == "kafka"
    # The classify stage's consumer group is group_id itself (monitor and alerts add a suffix).
    assert trigger["metadata"]["consumerGroup"] == settings["group_id"]
    assert trigger["metadata"]["topic"] == settings["input_topic"]
    assert trigger["metadata"]["bootstrapServers"] == settings["bootstrap_servers"]
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    assert scaler["spec"]["minReplicaCount"] >= 1


def test_kustomization_lists_every_manifest_and_config_file() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = set(kustomization["resources"])
    for name in resources:
        assert (K8S / name).is_file(), name
    assert {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"} == resources
    (generator,) = kustomization["configMapGenerator"]
    for name in generator["files"]:
        assert (K8S / name).is_file(), name
    settings = yaml.safe_load((K8S / "config" / "settings.yaml").read_text())
    assert set(settings) <= set(OPTIONS_BY_NAME)


def test_gpu_overlay_adds_the_gpu_deployment_and_its_model_volume_to_the_base() -> None:
    kustomization = yaml.safe_load((GPU / "kustomization.yaml").read_text())
    assert (GPU / kustomization["resources"][0]).resolve() == K8S  # the whole base first
    assert kustomization["namespace"] == "finsent"  # what the base's objects get
    own = set(kustomization["resources"][1:])
    assert own == {path.name for path in GPU.glob("*.yaml")} - {"kustomization.yaml", "models-loader.yaml"}
    (gpu,) = [d for p, d in k8s_documents() if p.parent == GPU and d["kind"] == "Deployment"]
    pod = gpu["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    defined = {d["metadata"]["name"] for p, d in k8s_documents() if d["kind"] == "PersistentVolumeClaim"}
    assert claims and claims <= defined
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--device") + 1] == "cuda"
    model_dir = args[args.index("--model-dir") + 1]
    (models,) = [m for m in container["volumeMounts"] if model_dir.startswith(m["mountPath"] + "/")]
    assert models["readOnly"] is True
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, parsed (skipped where kubectl is absent)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl here")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def check_built_references(built: list[dict[str, Any]]) -> None:
    """Every Deployment mounts the generated ConfigMap by its hashed name and claims PVCs that the build
    defines, all in namespace finsent."""
    (config_map,) = [d for d in built if d["kind"] == "ConfigMap"]
    assert re.fullmatch(r"finsent-config-[a-z0-9]{10}", config_map["metadata"]["name"])
    claims = {d["metadata"]["name"] for d in built if d["kind"] == "PersistentVolumeClaim"}
    for document in built:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "finsent", document["metadata"]["name"]
        if document["kind"] == "Deployment":
            volumes = document["spec"]["template"]["spec"]["volumes"]
            names = {v["configMap"]["name"] for v in volumes if "configMap" in v}
            assert names == {config_map["metadata"]["name"]}, document["metadata"]["name"]
            used = {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
            assert used <= claims, document["metadata"]["name"]


def test_kubectl_kustomize_builds_when_available() -> None:
    built = kustomize_build(K8S)
    kinds = sorted(document["kind"] for document in built)
    assert kinds.count("Deployment") == 3
    assert {"ScaledObject", "ServiceMonitor", "PodDisruptionBudget", "PrometheusRule", "ConfigMap"} <= set(
        kinds
    )
    check_built_references(built)


def test_kubectl_kustomize_builds_the_gpu_overlay_when_available() -> None:
    """The GPU Deployment gets the base's namespace, hashed ConfigMap name and labels; its model PVC exists."""
    built = kustomize_build(GPU)
    deployments = {d["metadata"]["name"]: d for d in built if d["kind"] == "Deployment"}
    assert set(deployments) == {
        "finsent-classify",
        "finsent-monitor",
        "finsent-alerts",
        "finsent-classify-gpu",
    }
    check_built_references(built)
    gpu = deployments["finsent-classify-gpu"]
    assert gpu["metadata"]["labels"]["app.kubernetes.io/part-of"] == "finsent"
    base = {(d["kind"], d["metadata"]["name"]) for d in kustomize_build(K8S)}
    assert base <= {(d["kind"], d["metadata"]["name"]) for d in built}  # the whole base, unchanged names


# ---------------------------------------------------------------- Dockerfiles


def dockerfile_stages(path: Path) -> list[list[str]]:
    """Instructions (continuations joined, comments dropped) grouped by FROM."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def instruction(stage: list[str], keyword: str) -> list[str]:
    return [line[len(keyword) :].strip() for line in stage if line.upper().startswith(keyword + " ")]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_runtime_stage_is_non_root_with_healthcheck_and_runs_finsent(name: str) -> None:
    stages = dockerfile_stages(DOCKER / name)
    assert len(stages) == 2, "multi-stage: build, runtime"
    runtime = stages[-1]
    (user,) = instruction(runtime, "USER")
    assert user.split(":")[0] not in ("0", "root")
    (health,) = instruction(runtime, "HEALTHCHECK")
    assert "/healthz" in health
    (entrypoint,) = instruction(runtime, "ENTRYPOINT")
    (cmd,) = instruction(runtime, "CMD")
    argv = json.loads(entrypoint) + json.loads(cmd)
    assert argv[0] == "finsent"
    assert build_parser().parse_args(argv[1:]).command == "run"  # what the tests run: `finsent run`
    assert "EXPOSE 9464" in runtime


def test_cpu_image_installs_no_pytorch() -> None:
    stages = dockerfile_stages(DOCKER / "Dockerfile.cpu")
    text = "\n".join(line for stage in stages for line in stage)
    assert not re.search(r"\btorch\b|transformers|\[train|\.\[", text.replace("find_spec('torch')", ""))
    requirements = [
        line.strip()
        for line in (DOCKER / "requirements-cpu.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # The project's serving dependencies, onnxruntime-gpu swapped for the CPU wheel; nothing else.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert requirements == [dep.replace("onnxruntime-gpu", "onnxruntime") for dep in project]
    assert not any(re.match(r"(torch|transformers|onnx)\b(?!runtime)", req) for req in requirements)
    # The finsent wheel is installed without its dependency list (which names onnxruntime-gpu).
    runtime = "\n".join(stages[-1])
    assert "--no-deps" in runtime and "requirements-cpu.txt" in runtime
    # A build-time guard fails the image if torch is importable in it.
    assert "find_spec('torch') is not None" in runtime


def test_gpu_image_is_cuda_based_with_onnxruntime_gpu() -> None:
    stages = dockerfile_stages(DOCKER / "Dockerfile.gpu")
    text = (DOCKER / "Dockerfile.gpu").read_text()
    base = re.search(r"ARG CUDA_IMAGE=(\S+)", text)
    assert base and base.group(1).startswith("nvidia/cuda:12.") and "cudnn" in base.group(1)
    assert stages[-1][0] == "FROM ${CUDA_IMAGE} AS runtime"
    assert "CUDAExecutionProvider" in "\n".join(stages[-1])
    assert any(
        dep.startswith("onnxruntime-gpu")
        for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    assert "torch" not in "\n".join(stages[-1]).replace("find_spec('torch')", "")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a directory match covers its files."""
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern == "**" or any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_copied_sources_exist_and_are_in_the_build_context(name: str) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert dockerignored("data/stock_tweets_stream_2020.csv", patterns)
    assert dockerignored(".venv/bin/python", patterns)
    assert dockerignored("finsent/__pycache__/cli.cpython-311.pyc", patterns)
    sources = []
    for stage in dockerfile_stages(DOCKER / name):
        for line in instruction(stage, "COPY"):
            if "--from=" in line:
                continue
            sources.extend(line.split()[:-1])
        for line in instruction(stage, "RUN"):
            sources.extend(re.findall(r"type=bind,source=([^,\s]+),target", line))
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source, patterns), f"{source} is excluded by .dockerignore"
    assert (ROOT / "model" / "default" / "model.int8.onnx").is_file()
    assert not dockerignored("model/default/model.int8.onnx", patterns)


@pytest.mark.integration
def test_serving_code_runs_without_pytorch() -> None:
    """What the CPU image runs, in a process where torch, transformers and onnx cannot be imported:
    the CLI, every stage module, and the shipped model scoring a headline."""
    script = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'onnx'):\n"
        "    sys.modules[name] = None\n"
        "from finsent.cli import build_parser\n"
        "import finsent.stages, finsent.classify_stage, finsent.monitor_stage, finsent.alerts_stage\n"
        "from model import Engine, DEFAULT_MODEL_DIR\n"
        "assert build_parser().parse_args(['run', '--stage', 'classify']).command == 'run'\n"
        "(p,) = Engine(DEFAULT_MODEL_DIR, device='cpu').predict(['Shares plunge after profit warning'])\n"
        "print(p.topic, p.sentiment)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] in ("negative", "neutral", "positive")
