#!/usr/bin/env python3
"""Checks the drydock Helm chart against a real Kubernetes API server (scripts/test runs it).

    check.py KUBECTL [CHART_DIR]        (KUBECONFIG: the cluster's admin kubeconfig)

1. Installs the chart with Helm's own engine (Helm v4's Go library, from the PyPI package
   helm-sdkpy) into a throwaway namespace: Helm renders the templates and creates the objects,
   validating them against the server's OpenAPI schema.
2. Sends the rendered manifest through `kubectl apply --dry-run=server` (kubectl built from the
   same tree as the server, so its client-side schema validation is the server's version's):
   unknown or misspelt fields and invalid values fail here.
3. Checks the Role: exactly the RBAC drydock's Kubernetes backend needs (pods create/get/list/
   watch/delete, and patch with a warm pool; pods/exec create/get, pods/log get,
   networkpolicies create/get/list/delete), and, through `kubectl auth can-i` as the chart's
   service account, that those are allowed and neighbouring ones (secrets, pods/portforward,
   deployments, other namespaces; patch without a pool) are not. Done for the default values
   (a warm pool of 1) and again with `sandbox.warmPool: 0`.
4. Applies deploy/kubernetes/rbac.yaml (the same rules for installs without Helm) through the
   same server-side dry run, then for real in a namespace of its own, and checks it the same way.
5. Uninstalls and deletes the namespaces, also on failure.
Exits non-zero with the reason on the first failed check.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile

import helm_sdkpy


def expected_rules(warm_pool):
    """What the sandbox backend uses (README "Kubernetes"); a Role must grant exactly this."""
    pods = {"create", "get", "list", "watch", "delete"} | ({"patch"} if warm_pool else set())
    return {
        ("", "pods"): pods,
        ("", "pods/exec"): {"create", "get"},
        ("", "pods/log"): {"get"},
        ("networking.k8s.io", "networkpolicies"): {"create", "get", "list", "delete"},
    }


def forbidden(warm_pool):
    """Things the service account must not be able to do."""
    return [
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "pods/portforward"),
        ("create", "pods/attach"),
        ("update", "pods"),
        ("create", "deployments.apps"),
        ("create", "services"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
    ] + ([] if warm_pool else [("patch", "pods")])


RELEASE = "drydock"


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def fail(msg):
    print(f"helm chart check: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def values(namespace):
    # Throwaway values: every required setting filled, the optional sandbox ones too.
    return {
        "replicaCount": 2,
        # The replicas' pods are scheduled but never pull (there is no registry here).
        "image": {"pullPolicy": "Never"},
        "publicUrl": "https://drydock.example.test",
        "githubClientId": "Iv1.check",
        "admins": ["octocat", "hubot"],
        "secrets": {
            "encryptionKey": "11" * 32,
            "jweSecret": "22" * 32,
            "databaseUrl": "postgres://drydock:check@postgres:5432/drydock",
            "githubClientSecret": "check-only",
        },
        "sandbox": {
            "image": "registry.example.test/drydock-sandbox:check",
            "kubernetes": {
                "namespace": namespace,
                "runtimeClassName": "gvisor",
                "nodeSelector": {"drydock.dev/sandbox": "true", "kubernetes.io/os": "linux"},
            },
        },
    }


async def install(kubeconfig, chart, namespace, vals=None):
    config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    result = await helm_sdkpy.Install(config).run(
        RELEASE,
        chart,
        values=vals or values(namespace),
        create_namespace=True,
        wait=False,
        timeout=120,
        disable_openapi_validation=False,
    )
    return result


async def uninstall(kubeconfig, namespace):
    config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    await helm_sdkpy.Uninstall(config).run(RELEASE, wait=False, timeout=60)


def check_role(k, namespace, sa, warm_pool, what):
    """The one Role in `namespace` grants exactly the backend's rules, and `sa` may do exactly that."""
    r = run(k + ["-n", namespace, "get", "roles", "-o", "json"])
    if r.returncode != 0:
        fail(f"kubectl get roles: {r.stderr}")
    roles = json.loads(r.stdout)["items"]
    if len(roles) != 1:
        fail(f"{what}: expected one Role in {namespace}, found {len(roles)}")
    got = {}
    for rule in roles[0].get("rules", []):
        if rule.get("resourceNames") or rule.get("nonResourceURLs"):
            fail(f"{what}: unexpected rule shape: {rule}")
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                got.setdefault((group, resource), set()).update(rule.get("verbs", []))
    expected = expected_rules(warm_pool)
    if got != expected:
        fail(f"{what}: the Role grants {sorted((g, r, sorted(v)) for (g, r), v in got.items())}, "
             f"expected {sorted((g, r, sorted(v)) for (g, r), v in expected.items())}")
    who = f"system:serviceaccount:{namespace}:{sa}"

    def can(verb, target, ns=namespace):
        # "pods/exec": resource pods, subresource exec (TYPE/NAME would mean an object's name).
        resource, _, sub = target.partition("/")
        cmd = k + ["auth", "can-i", verb, resource, "-n", ns, "--as", who]
        if sub:
            cmd.append(f"--subresource={sub}")
        r = run(cmd)
        return r.stdout.strip() == "yes"

    for (group, resource), verbs in expected.items():
        name, _, sub = resource.partition("/")
        target = (f"{name}.{group}" if group else name) + (f"/{sub}" if sub else "")
        for verb in sorted(verbs):
            if not can(verb, target):
                fail(f"{what}: {who} may not {verb} {target}")
    for verb, target in forbidden(warm_pool):
        if can(verb, target):
            fail(f"{what}: {who} may {verb} {target}, which drydock does not need")
    if can("create", "pods", ns="default"):
        fail(f"{what}: {who} may create pods outside its namespace")
    pool = "with a warm pool" if warm_pool else "without a warm pool"
    print(f"helm chart check: {what} grants exactly the sandbox backend's RBAC {pool}")


def release_account(k, namespace):
    r = run(k + ["-n", namespace, "get", "serviceaccounts", "-l", f"app.kubernetes.io/instance={RELEASE}",
                 "-o", "jsonpath={.items[0].metadata.name}"])
    return r.stdout.strip() or fail(f"no service account of the release: {r.stderr}")


def check_plain_manifest(k, namespace):
    """deploy/kubernetes/rbac.yaml, moved to `namespace`: server-side dry run, then applied and checked."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kubernetes", "rbac.yaml")
    with open(path) as f:
        text = f.read()
    # Lines that set a namespace (the comments show the same words in a sed example).
    if sum(1 for line in text.splitlines() if line.strip() == "namespace: drydock") != 4:
        fail("deploy/kubernetes/rbac.yaml: expected its three objects and the subject in namespace drydock")
    text = text.replace("namespace: drydock", f"namespace: {namespace}")
    r = run(k + ["create", "namespace", namespace])
    if r.returncode != 0:
        fail(f"kubectl create namespace: {r.stderr}")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        for extra in (["--dry-run=server"], []):
            r = run(k + ["apply", "--validate=true", *extra, "-f", f.name])
            if r.returncode != 0:
                fail(f"kubectl apply {' '.join(extra)} deploy/kubernetes/rbac.yaml:\n{r.stdout}{r.stderr}")
    print("helm chart check: kubectl apply --dry-run=server accepted deploy/kubernetes/rbac.yaml")
    check_role(k, namespace, "drydock", True, "deploy/kubernetes/rbac.yaml")


def main():
    if len(sys.argv) < 2:
        fail("usage: check.py KUBECTL [CHART_DIR]")
    kubectl = sys.argv[1]
    chart = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "drydock"))
    kubeconfig = os.environ.get("KUBECONFIG") or fail("KUBECONFIG is unset")
    namespace = f"drydock-chart-check-{os.getpid()}"
    k = [kubectl, "--kubeconfig", kubeconfig]
    try:
        print(f"helm chart check: installing {chart} with Helm {helm_sdkpy.get_version()} into {namespace}")
        try:
            result = asyncio.run(install(kubeconfig, chart, namespace))
        except helm_sdkpy.HelmError as e:
            fail(f"helm install: {e}")
        manifest = result.get("manifest") or fail(f"helm returned no manifest: {sorted(result)}")
        kinds = sorted(
            line.split(":", 1)[1].strip() for line in manifest.splitlines() if line.startswith("kind:")
        )
        print(f"helm chart check: rendered {', '.join(kinds)}")
        for kind in ["Deployment", "Role", "RoleBinding", "Secret", "Service", "ServiceAccount"]:
            if kind not in kinds:
                fail(f"the chart rendered no {kind}")

        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(manifest)
            f.flush()
            r = run(k + ["apply", "--dry-run=server", "--validate=true", "-n", namespace, "-f", f.name])
            if r.returncode != 0:
                fail(f"kubectl apply --dry-run=server:\n{r.stdout}{r.stderr}")
            print("helm chart check: kubectl apply --dry-run=server accepted it:")
            print("".join("  " + line + "\n" for line in r.stdout.splitlines()), end="")

        check_role(k, namespace, release_account(k, namespace), True, "the chart's Role")

        # Without a warm pool nothing relabels pods: no `patch pods`.
        nopool = values(namespace + "-nopool")
        nopool["sandbox"]["warmPool"] = 0
        try:
            asyncio.run(install(kubeconfig, chart, namespace + "-nopool", nopool))
        except helm_sdkpy.HelmError as e:
            fail(f"helm install with sandbox.warmPool=0: {e}")
        check_role(k, namespace + "-nopool", release_account(k, namespace + "-nopool"), False,
                   "the chart's Role")

        check_plain_manifest(k, namespace + "-plain")

        # Values drydock would refuse at start-up are refused at install, with the reason.
        bad = values(namespace + "-bad")
        bad["secrets"]["githubClientSecret"] = ""
        try:
            asyncio.run(install(kubeconfig, chart, namespace + "-bad", bad))
            fail("the chart accepted githubClientId without secrets.githubClientSecret")
        except helm_sdkpy.HelmError as e:
            if "githubClientId needs secrets.githubClientSecret" not in str(e):
                fail(f"unexpected refusal: {e}")
        print("helm chart check: a GitHub client id without its secret is refused")
        print("helm chart check: ok")
    finally:
        for ns in (namespace, namespace + "-nopool"):
            try:
                asyncio.run(uninstall(kubeconfig, ns))
            except Exception as e:  # the namespace deletion below removes what is left
                print(f"helm chart check: uninstall: {e}", file=sys.stderr)
        run(k + ["delete", "namespace", namespace, namespace + "-bad", namespace + "-nopool",
                 namespace + "-plain", "--wait=false", "--ignore-not-found"])


if __name__ == "__main__":
    main()
