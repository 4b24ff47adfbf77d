"""NetworkPolicies open only the paths the pipeline needs: workers to Redis, saver to SFTP, extractor to the source,
ingress to the API, Prometheus to the metrics ports, DNS for all."""

from tests.chart import k8s


def _policies_for(objs: list[dict], pod_labels: dict) -> list[dict]:
    return [
        p
        for p in objs
        if p["kind"] == "NetworkPolicy" and p["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    ]


def _egress_ports(policies: list[dict]) -> set[int]:
    return {port["port"] for p in policies for rule in p["spec"].get("egress") or [] for port in rule.get("ports", [])}


def _egress_peers(policies: list[dict]) -> list[dict]:
    return [peer for p in policies for rule in p["spec"].get("egress") or [] for peer in rule.get("to", [])]


def _selects(peer: dict, labels: dict) -> bool:
    return "podSelector" in peer and peer["podSelector"]["matchLabels"].items() <= labels.items()


def test_every_pod_is_under_ingress_and_egress_policies(rendered):
    for w in k8s.workloads(rendered):
        policies = _policies_for(rendered, k8s.pod_labels(w))
        types = {t for p in policies for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, w["metadata"]["name"]
        # DNS for every pod, and nothing but DNS from the default-deny policy.
        assert 53 in _egress_ports(policies)


def test_only_the_needed_components_reach_redis_and_sftp():
    objs = k8s.render_objects(k8s.VALUE_SETS["kind-values"])
    pods = {k8s.component(w): k8s.pod_labels(w) for w in k8s.workloads(objs) if not k8s.is_hook(w)}
    for name, labels in pods.items():
        peers = _egress_peers(_policies_for(objs, labels))
        reaches_redis = any(_selects(p, pods["redis"]) for p in peers)
        reaches_sftp = any(_selects(p, pods["sftp"]) for p in peers)
        assert reaches_redis == (name in {"extractor", "transformer", "saver", "api"}), name
        assert reaches_sftp == (name == "saver"), name
        internet = any(p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for p in peers)
        assert internet == (name == "extractor"), name
    redis_in = _policies_for(objs, pods["redis"])
    sources = [peer for p in redis_in for rule in p["spec"].get("ingress") or [] for peer in rule["from"]]
    assert sorted(peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in sources) == [
        "api",
        "extractor",
        "saver",
        "transformer",
    ]


def test_api_is_reachable_from_the_ingress_controller_and_metrics_from_prometheus(rendered):
    for w in k8s.workloads(rendered):
        if k8s.is_hook(w) or k8s.component(w) in ("redis", "sftp"):
            continue
        ingress = [r for p in _policies_for(rendered, k8s.pod_labels(w)) for r in p["spec"].get("ingress") or []]
        namespaces = [
            peer["namespaceSelector"]["matchLabels"]
            for r in ingress
            for peer in r["from"]
            if "namespaceSelector" in peer
        ]
        assert {"kubernetes.io/metadata.name": "monitoring"} in namespaces
        if k8s.component(w) == "api":
            assert {"kubernetes.io/metadata.name": "ingress-nginx"} in namespaces
        ports = {c["containerPort"] for c in k8s.pod_spec(w)["containers"][0]["ports"]}
        assert {port["port"] for r in ingress for port in r["ports"]} <= ports


def test_external_servers_are_reached_on_their_ports_only():
    objs = k8s.render_objects(k8s.VALUE_SETS["external-values"])
    saver = k8s.by_component(objs, "Deployment", "saver")
    policies = _policies_for(objs, k8s.pod_labels(saver))
    assert {6380, 2222} <= _egress_ports(policies)
    cidrs = {p["ipBlock"]["cidr"] for p in _egress_peers(policies) if "ipBlock" in p}
    assert cidrs == {"10.20.0.0/24", "10.30.0.5/32"}
