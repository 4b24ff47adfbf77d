"""Optional pod settings (nodeSelector, tolerations, affinity, podAnnotations): absent unless set; global or per pod."""

from testbed import chart
from tests.chart import k8s

ETL = ("extractor", "transformer", "saver", "api", "redis", "sftp")
TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "etl", "effect": "NoSchedule"}


def _pods(values: dict) -> dict[str, tuple[dict, dict]]:
    """component -> (pod template metadata, pod spec) of every workload but the helm test pod, on the kind values
    (every component in the cluster) with ``values`` on top."""
    out = {}
    for w in k8s.workloads(k8s.render_objects(chart._merge(k8s.VALUE_SETS["kind-values"], values))):
        if k8s.is_hook(w):
            continue
        template = w["spec"]["template"] if w["kind"] != "CronJob" else w["spec"]["jobTemplate"]["spec"]["template"]
        out[k8s.component(w)] = (template["metadata"], k8s.pod_spec(w))
    return out


def test_nothing_optional_is_rendered_by_default():
    pods = _pods({})
    assert set(pods) == set(ETL)
    for name, (meta, spec) in pods.items():
        assert not {"nodeSelector", "tolerations"} & set(spec), name
        assert set(meta.get("annotations", {})) <= {"checksum/config"}, name
    # Only the component's own rules: the API on the saver's node, the saver preferring the API's node.
    assert set(pods["api"][1]["affinity"]["podAffinity"]) == {"requiredDuringSchedulingIgnoredDuringExecution"}
    assert set(pods["saver"][1]["affinity"]["podAffinity"]) == {"preferredDuringSchedulingIgnoredDuringExecution"}
    assert not {"affinity"} & {k for n in ETL if n not in ("api", "saver") for k in pods[n][1]}


def test_global_values_reach_every_pod_and_a_component_s_own_replace_them():
    anti = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    values = {
        "nodeSelector": {"pool": "etl"},
        "tolerations": [TOLERATION],
        "affinity": anti,
        "podAnnotations": {"team": "data", "mesh": "on"},
    }
    values["transformer"] = {"nodeSelector": {"pool": "cpu"}, "tolerations": [], "podAnnotations": {"mesh": "off"}}
    pods = _pods(values)
    for name, (meta, spec) in pods.items():
        want_pool = "cpu" if name == "transformer" else "etl"
        assert spec["nodeSelector"] == {"pool": want_pool}, name
        assert spec["tolerations"] == [TOLERATION], name  # an empty list keeps the global one
        assert spec["affinity"]["podAntiAffinity"] == anti["podAntiAffinity"], name
        assert meta["annotations"]["team"] == "data", name
        assert meta["annotations"]["mesh"] == ("off" if name == "transformer" else "on"), name


def test_the_api_keeps_its_rule_to_run_on_the_saver_s_node_beside_the_user_s_affinity():
    node = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": []}]}}
    own = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": {"topologyKey": "z"}}]}
    _, spec = _pods({"api": {"affinity": {"nodeAffinity": node, "podAffinity": own}}})["api"]
    assert spec["affinity"]["nodeAffinity"] == node
    pod_affinity = spec["affinity"]["podAffinity"]
    assert (
        pod_affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        == own["preferredDuringSchedulingIgnoredDuringExecution"]
    )
    (required,) = pod_affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "saver"
