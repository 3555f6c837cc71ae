"""deploy/kubernetes agrees with the service it deploys: the ConfigMap's config.toml loads with
the real config loader (under the container's environment), the ports, probes and mounted
files are the ones that config uses, and the optional examples produce the Secrets the
Deployment mounts. `make validate-deploy` checks the same files against the Kubernetes schemas
(kubernetes-validate) and a security scanner (checkov); the CRD kinds it has no schema for are
checked here, field by field."""

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signer import config as config_module
from signer.config import Config, ServerConfig
from signer.grpc.health import LIVENESS_NAME, key_service_name
from signer.grpc.server import SERVICE_NAME, SHUTDOWN_MARGIN_SECONDS, SignerServer
from signer.listen import split_listen
from signer.service import KeyRing
from tests.conftest import env_wallet, open_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
EXAMPLES = DEPLOY / "examples"
# kinds kubernetes-validate has schemas for (Makefile: validate-deploy validates these files)
CORE_KINDS = {
    "Namespace": "v1", "ServiceAccount": "v1", "ConfigMap": "v1", "Service": "v1",
    "Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
}
# CRDs: no schema in kubernetes-validate (the Makefile leaves their files out); checked below
CRD_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "Certificate": "cert-manager.io/v1",
    "ExternalSecret": "external-secrets.io/v1",
}
NAMESPACE = "wallet-signer"
CLIENT_LABEL = ("wallet-signer/client", "true")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in documents(path):
                yield path, doc


def one(kind: str, name: str | None = None, where: Path = DEPLOY) -> dict[str, Any]:
    found = [d for p, d in manifests() if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name) and p.is_relative_to(where)
             and (where != DEPLOY or p.parent == DEPLOY)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {where}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return one("Deployment", "wallet-signer")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


@pytest.fixture(scope="module")
def config_text() -> str:
    return str(one("ConfigMap", "wallet-signer-config")["data"]["config.toml"])


@pytest.fixture(scope="module")
def config(config_text: str, container_env: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The config the pod runs with: the ConfigMap's file, with the container's environment
    overrides on top, through the real loader."""
    path = tmp_path_factory.mktemp("cm") / "config.toml"
    path.write_text(config_text, encoding="utf-8")
    return config_module.load(path, environ=container_env)


def port_named(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


# --- the files and their kinds -------------------------------------------------------------------


def test_every_manifest_is_a_kind_we_validate_and_files_do_not_mix_schema_and_crd_kinds():
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        kinds = {d["kind"] for d in documents(path)}
        assert kinds, f"{path}: no document"
        unknown = kinds - set(CORE_KINDS) - set(CRD_KINDS)
        assert not unknown, f"{path}: add {unknown} to CORE_KINDS or check it as a CRD here"
        # the Makefile leaves a file out of kubernetes-validate when it holds a CRD kind
        assert kinds <= set(CORE_KINDS) or kinds <= set(CRD_KINDS), f"{path} mixes {kinds}"
        for doc in documents(path):
            expected = {**CORE_KINDS, **CRD_KINDS}[doc["kind"]]
            assert doc["apiVersion"] == expected, f"{path}: {doc['kind']} {doc['apiVersion']}"
            assert doc["kind"] == "Namespace" or doc["metadata"].get("namespace"), (
                f"{path}: {doc['kind']} {doc['metadata']['name']} names no namespace")


def test_the_kustomization_lists_every_base_manifest_and_no_example():
    kustomization = documents(DEPLOY / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)


def test_the_makefile_skips_exactly_the_crd_kinds_in_kubernetes_validate():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^K8S_NO_SCHEMA := \^kind: \(([^)]*)\)\$\$$", makefile, re.MULTILINE)
    assert match, "Makefile: K8S_NO_SCHEMA not found"
    assert set(match.group(1).split("|")) == {"Kustomization", *CRD_KINDS}


def test_every_checkov_skip_gives_its_reason():
    for path, doc in manifests():
        for name, value in (doc["metadata"].get("annotations") or {}).items():
            if name.startswith("checkov.io/skip"):
                check, _, reason = str(value).partition("=")
                assert re.fullmatch(r"CKV2?_K8S_\d+", check), f"{path}: {name}: {value}"
                assert len(reason.split()) >= 5, f"{path}: {name}: say why {check} is skipped"


# --- the Deployment ------------------------------------------------------------------------------


def test_replicas_share_a_postgresql_store(deployment, config, config_text, container_env):
    assert deployment["spec"]["replicas"] >= 2
    assert config.environment == "production"
    assert config.store.url.startswith("postgresql://")
    # the image's environment names its SQLite file; the Deployment overrides it with the same
    # URL as the file (an edit of one without the other would be a silent split)
    assert container_env["WALLET_SIGNER_STORE__URL"] == tomllib.loads(config_text)["store"]["url"]
    backends = {k.backend for k in config.keys.values()}
    assert backends <= {"kms", "pkcs11"} and backends


def test_the_pod_runs_as_the_images_user_locked_down(deployment, container):
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    uid = int(re.search(r"useradd [^\n]*--uid (\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    ctx = container["securityContext"]
    assert ctx["runAsUser"] == uid and ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    for volume in pod["volumes"]:
        if "secret" in volume or "configMap" in volume:
            mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
            assert mount.get("readOnly") is True, f"{volume['name']} is mounted writable"
    assert not any("valueFrom" in e for e in container.get("env", [])), "secrets as files only"


def test_the_image_is_the_version_this_repository_builds(container):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == f"wallet-signer:{version}"


def test_listeners_bind_the_pod_address_on_the_container_ports(config, container):
    listeners = {
        "grpc": config.server.listen,
        "health": config.server.health_listen,
        "metrics": config.metrics.listen if config.metrics else None,
        "jsonrpc": config.jsonrpc.listen if config.jsonrpc else None,
    }
    for name, listen in listeners.items():
        assert listen is not None, f"config.toml has no listener for port {name}"
        host, port = split_listen(listen)
        assert host == "0.0.0.0", f"{name}: {listen} is unreachable from the Service and kubelet"
        assert port_named(container, name) == port
    assert {p["name"] for p in container["ports"]} == set(listeners)
    # the main listener is mTLS; only the health-only one is plaintext
    assert config.server.tls and config.server.client_ca_file is not None


def test_probes_are_native_grpc_on_the_health_only_listener(config, container):
    health_port = split_listen(config.server.health_listen or "")[1]
    names = {LIVENESS_NAME, SERVICE_NAME, "", *(key_service_name(SERVICE_NAME, k)
                                                for k in config.keys)}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        grpc_probe = container[probe]["grpc"]
        assert grpc_probe["port"] == health_port, probe
        assert grpc_probe["service"] in names, f"{probe}: {grpc_probe['service']!r} is no name"
    # liveness must not follow the keys (a shared backend outage would restart every replica)
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS_NAME
    assert container["readinessProbe"]["grpc"]["service"] != LIVENESS_NAME


def test_the_probe_names_are_served_by_a_real_server(config, container, tmp_path):
    """The manifest's probe names against a server started with the ConfigMap's [server]
    settings (loopback, ephemeral ports, no TLS: the health listener is plaintext anyway) and
    one key per configured key id."""
    keys = [env_wallet("0x" + f"{i + 1:02x}" * 32, key_id) for i, key_id in enumerate(config.keys)]
    server_config = ServerConfig(**{
        **config.server.model_dump(exclude={"tls_cert_file", "tls_key_file", "client_ca_file"}),
        "listen": "127.0.0.1:0", "health_listen": "127.0.0.1:0",
    })
    server = SignerServer(open_app(KeyRing(keys), tmp_path), server_config)
    try:
        server.self_test_and_mark_ready()
        with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                request = health_pb2.HealthCheckRequest(service=container[probe]["grpc"]["service"])
                status = stub.Check(request, timeout=5).status
                assert status == health_pb2.HealthCheckResponse.SERVING, probe
    finally:
        server.stop(0)


def test_termination_grace_covers_the_servers_shutdown(deployment, config, container):
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = config.server.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS + pre_stop
    assert pod["terminationGracePeriodSeconds"] >= needed


def mounted_files(deployment: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple]:
    """Every file the container sees from a ConfigMap or Secret: path -> (kind, name, key)."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    files: dict[str, tuple] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "secret" in volume:
            source = ("Secret", volume["secret"]["secretName"], volume["secret"].get("items"))
        elif "configMap" in volume:
            source = ("ConfigMap", volume["configMap"]["name"], volume["configMap"].get("items"))
        else:
            continue
        kind, name, items = source
        if items is None:
            assert kind == "ConfigMap", f"Secret {name}: list the keys it must hold (items)"
            items = [{"key": k, "path": k} for k in one(kind, name)["data"]]
        for item in items:
            files[str(PurePosixPath(mount["mountPath"]) / item["path"])] = (kind, name, item["key"])
    return files


def config_file_paths(config: Config, container: dict[str, Any]) -> set[str]:
    paths = {str(p) for p in (config.server.tls_cert_file, config.server.tls_key_file,
                              config.server.client_ca_file, config.store.password_file) if p}
    paths |= {str(k.pin_file) for k in config.keys.values()
              if k.backend == "pkcs11" and k.pin_file is not None}
    paths |= set(parse_qs(urlsplit(config.store.url).query).get("sslrootcert", []))
    paths.add(container["args"][container["args"].index("--config") + 1])
    return paths


def test_every_file_the_config_names_is_mounted(deployment, container, container_env, config):
    files = mounted_files(deployment, container)
    needed = config_file_paths(config, container)
    missing = needed - set(files)
    assert not missing, f"config.toml names files no volume provides: {sorted(missing)}"
    assert container_env["WALLET_SIGNER_CONFIG"] in files
    # the config itself comes from the ConfigMap, mounted whole so that edits reach the pod
    assert files[container_env["WALLET_SIGNER_CONFIG"]] == (
        "ConfigMap", "wallet-signer-config", "config.toml")
    assert not any("subPath" in m for m in container["volumeMounts"])
    secret_files = {p for p, (kind, _, _) in files.items() if kind == "Secret"}
    assert secret_files == needed - {container_env["WALLET_SIGNER_CONFIG"]}, (
        "a Secret file that the config does not use")


# --- Service, PodDisruptionBudget, NetworkPolicy, ServiceMonitor ---------------------------------


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_budget_and_policy_select_the_pods(deployment, container):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == {
        k: pod_labels[k] for k in deployment["spec"]["selector"]["matchLabels"]}
    port_names = {p["name"] for p in container["ports"]}
    for name in ("wallet-signer", "wallet-signer-headless"):
        service = one("Service", name)
        assert matches(service["spec"]["selector"], pod_labels)
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
            assert port["port"] == port_named(container, port["targetPort"])
    assert one("Service", "wallet-signer-headless")["spec"]["clusterIP"] == "None"
    # the health port is for the kubelet only: no Service exposes it
    assert all(p["targetPort"] != "health" for p in one("Service", "wallet-signer")["spec"]["ports"])
    pdb = one("PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    policy = one("NetworkPolicy", "wallet-signer")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels)


def test_the_network_policy_admits_only_labelled_agents_and_prometheus(container):
    policy = one("NetworkPolicy", "wallet-signer")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    admitted: dict[str, set[str]] = {}
    for rule in policy["ingress"]:
        for peer in rule["from"]:
            assert "ipBlock" not in peer, "ingress by address would bypass the labels"
            assert peer["podSelector"]["matchLabels"], "a peer that is every pod"
            who = "agents" if peer["podSelector"]["matchLabels"] == dict([CLIENT_LABEL]) else (
                "prometheus" if peer["podSelector"]["matchLabels"] == {
                    "app.kubernetes.io/name": "prometheus"} else "unknown")
            admitted.setdefault(who, set()).update(p["port"] for p in rule["ports"])
    assert admitted == {"agents": {"grpc", "jsonrpc"}, "prometheus": {"metrics"}}
    names = {p["name"] for p in container["ports"]}
    assert set().union(*admitted.values()) <= names


def test_the_service_monitor_scrapes_the_metrics_port(config):
    monitor = one("ServiceMonitor")["spec"]
    services = [s for s in (one("Service", n) for n in ("wallet-signer", "wallet-signer-headless"))
                if matches(monitor["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert services and NAMESPACE in monitor["namespaceSelector"]["matchNames"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["scheme"] == "http"
    scraped = [p for s in services for p in s["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert scraped and all(p["port"] == split_listen(config.metrics.listen)[1] for p in scraped)


# --- the optional examples ----------------------------------------------------------------------


def test_cert_manager_issues_the_server_and_client_certificates_the_config_expects(
        deployment, container, config):
    files = mounted_files(deployment, container)
    server_secret = files[str(config.server.tls_cert_file)][1]
    assert files[str(config.server.tls_key_file)][1] == server_secret
    assert files[str(config.server.tls_cert_file)][2] == "tls.crt"  # cert-manager's key names
    assert files[str(config.server.tls_key_file)][2] == "tls.key"
    certificates = [d for p, d in manifests() if d["kind"] == "Certificate"]
    server = next(c for c in certificates if c["spec"]["secretName"] == server_secret)
    assert server["metadata"]["namespace"] == NAMESPACE
    assert "server auth" in server["spec"]["usages"]
    for name in ("wallet-signer", "wallet-signer-headless"):
        assert f"{name}.{NAMESPACE}.svc" in server["spec"]["dnsNames"]
    identities = {c.identity for c in config.clients.values()}
    clients = [c for c in certificates if "client auth" in c["spec"]["usages"]]
    assert clients
    for client in clients:
        assert client["spec"]["issuerRef"] == server["spec"]["issuerRef"]
        assert set(client["spec"]["uris"]) <= identities, "a client certificate no client names"


def test_external_secrets_fill_every_key_the_deployment_mounts(deployment, container):
    wanted: dict[str, set[str]] = {}
    for kind, name, key in mounted_files(deployment, container).values():
        if kind == "Secret" and name not in ("wallet-signer-tls", "wallet-signer-client-ca"):
            wanted.setdefault(name, set()).add(key)
    synced: dict[str, set[str]] = {}
    for _, doc in manifests():
        if doc["kind"] == "ExternalSecret":
            spec = doc["spec"]
            assert doc["metadata"]["namespace"] == NAMESPACE
            assert spec["secretStoreRef"]["name"] and spec["target"]["creationPolicy"] == "Owner"
            assert all(d["remoteRef"]["key"] for d in spec["data"])
            synced[spec["target"]["name"]] = {d["secretKey"] for d in spec["data"]}
    assert synced == wanted


def test_the_example_agent_is_admitted_by_the_network_policy(config):
    agent = one("Deployment", "trader", where=EXAMPLES)
    labels = agent["spec"]["template"]["metadata"]["labels"]
    assert labels.get(CLIENT_LABEL[0]) == CLIENT_LABEL[1]
    service = one("Service", "wallet-signer")
    env = {e["name"]: e["value"] for e in agent["spec"]["template"]["spec"]["containers"][0]["env"]}
    host, port = split_listen(env["WALLET_SIGNER_SERVER"])
    assert host == f"{service['metadata']['name']}.{NAMESPACE}.svc"
    assert port == split_listen(config.server.listen)[1]
