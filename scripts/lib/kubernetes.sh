# shellcheck shell=bash
# A throwaway Kubernetes v1.20 cluster for drydock's Kubernetes tests: sourced by scripts/services.
#
# No package registry ships Kubernetes server binaries for this machine, but Debian's `kubernetes`
# source package is the full upstream tree (with vendor/), and Debian's Go builds it offline. So:
#   k8s_build   builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl
#               once per machine, cached under $K8S_ROOT/bin-<source version>-r<recipe>/, plus etcd
#               (Debian's etcd-server, extracted: installing it would start a system service) and a
#               static pause binary packed as a one-file image.
#   k8s_start   etcd + control plane on the host, two nodes (containerd's CRI plugin + a kubelet
#               each) in network namespaces this script creates; imports the sandbox image into
#               both nodes; waits until both are Ready; prints the export lines.
#   k8s_stop    stops all of it and removes what it left: mounts, network namespaces, cgroups,
#               /var/lib/cni results of its network, pod logs.
# Everything a run makes lives under $K8S_RUN; the nodes' image stores are a tmpfs there (about
# 2 GB each with the sandbox image; DRYDOCK_K8S_STORE=disk to keep them on disk instead).
#
# Network (only inside namespaces created here; nothing routes off the machine):
#   host veth dd-k8s0 10.77.0.1/24 (the API server listens there, :6443)
#     └─ switch netns dd-k8s-sw (bridge br0)
#          ├─ node netns dd-k8s-n1: eth0 10.77.0.21, pods 10.77.11.0/24 on cni0
#          └─ node netns dd-k8s-n2: eth0 10.77.0.22, pods 10.77.12.0/24 on cni0
#   The node namespaces have no default route: the kubelet's cloud credential lookups and any pod
#   traffic to outside addresses fail at once. The host routes each pod range to its node, so
#   tests on the host (and pods, through their node) reach pods directly. Services have no
#   kube-proxy here (cluster IPs in 10.77.96.0/24 do not route); NetworkPolicy is not enforced
#   (the bridge CNI plugin does not enforce it).
#
# Needs: root, Debian bookworm's apt sources (deb-src entries mirroring them are added when missing:
# /etc/apt/sources.list.d/drydock-deb-src.*), cgroup v1 (kubelet 1.20), a running dockerd (to
# `docker save` the sandbox image).

K8S_ROOT=${DRYDOCK_K8S_ROOT:-/var/tmp/drydock-k8s}
K8S_RUN=$K8S_ROOT/run
# Bump when the build recipe (patches, flags, binaries) changes: it is part of the cache key.
K8S_RECIPE=1
K8S_NODES=(1 2)
K8S_APISERVER=10.77.0.1
K8S_PAUSE_IMAGE=drydock-k8s/pause:1
# The nodes' image stores (each holds the unpacked sandbox image, ~2 GB): a tmpfs by default, so a
# run writes nothing big to disk and teardown is an unmount; DRYDOCK_K8S_STORE=disk puts them on disk.
K8S_STORE=$K8S_RUN/store

k8s_log() { printf 'services: kubernetes: [%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
k8s_die() { printf 'services: kubernetes: error: %s\n' "$*" >&2; exit 1; }

k8s_apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  k8s_log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
         && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

# (Outputs are read whole before grep: `producer | grep -q` under pipefail fails whenever grep
# stops reading before the producer is done writing.)
k8s_has_source() {
  local out
  out=$(apt-cache showsrc kubernetes 2>/dev/null) || return 1
  grep -q '^Package: kubernetes' <<<"$out"
}

# deb-src entries mirroring the machine's own Debian entries, when there are none.
k8s_ensure_deb_src() {
  if k8s_has_source; then return; fi
  k8s_log "adding deb-src entries for Debian's kubernetes source package"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      | as_root tee /etc/apt/sources.list.d/drydock-deb-src.sources >/dev/null
  elif [ -f /etc/apt/sources.list ]; then
    grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
      | as_root tee /etc/apt/sources.list.d/drydock-deb-src.list >/dev/null
  fi
  as_root apt-get update -qq >/dev/null
  k8s_has_source || k8s_die "Debian's kubernetes source package is not available from this machine's apt sources"
}

k8s_source_version() {
  apt-cache showsrc kubernetes | awk '/^Version:/ {print $2}' | sort -V | tail -n 1
}

# The binaries directory for this machine's source package version (built if missing).
k8s_bin_dir() {
  k8s_ensure_deb_src
  local version; version=$(k8s_source_version)
  echo "$K8S_ROOT/bin-${version//[^A-Za-z0-9.+-]/_}-r$K8S_RECIPE"
}

k8s_build() {
  local bin=$1
  [ -f "$bin/.complete" ] && return
  local work=$K8S_ROOT/build log=$K8S_ROOT/build.log version t0=$SECONDS
  version=$(k8s_source_version)
  rm -rf "$work" "$bin"; mkdir -p "$work" "$bin.partial"
  : > "$log"
  k8s_log "building Kubernetes from Debian's source package $version, once per machine (about 6 min on an idle 2-core machine, longer on a busy one; log: $log)"
  # Not `( ... ) || handler`: errexit is ignored inside a subshell tested that way, so a failed
  # step would not stop the build.
  local rc=0
  set +e
  (
    set -euo pipefail
    step() { printf 'services: kubernetes: [%(%H:%M:%S)T] build step %s/6: %s\n' -1 "$1" "$2" | tee -a "$log" >&3; }
    exec 3>&2 >>"$log" 2>&1
    cd "$work"
    step 1 "Debian packages (golang-go, containernetworking-plugins, containerd, gcc)"
    k8s_apt_install golang-go containernetworking-plugins containerd runc gcc libc6-dev openssl iproute2 util-linux
    step 2 "source package kubernetes=$version"
    apt-get source --download-only "kubernetes=$version"
    local orig top
    orig=$(ls kubernetes_*.orig.tar.*)
    tar -xf "$orig"
    rm -f kubernetes_*
    top=$(basename "$(find . -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*')")
    [ -d "$top/vendor" ] || { echo "no vendor/ in $orig"; exit 1; }
    mkdir -p gopath/src/k8s.io
    ln -sfn "$work/$top" gopath/src/k8s.io/kubernetes
    export GO111MODULE=off GOPATH=$work/gopath GOPROXY=off GOFLAGS="" CGO_ENABLED=0 GOCACHE=$work/gocache
    cd "$GOPATH/src/k8s.io/kubernetes"
    step 3 "patches for this machine, openapi-gen"
    # The VM's capability bounding set lacks CAP_SYS_RESOURCE, so runc cannot set a negative
    # oom_score_adj: containerd's restrict_oom_score_adj covers the CRI path; these two cover the
    # kubelet's own guaranteed-pod and (unused) dockershim values.
    sed -i 's/guaranteedOOMScoreAdj int = -997/guaranteedOOMScoreAdj int = 0/' pkg/kubelet/qos/policy.go
    sed -i 's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/' pkg/kubelet/dockershim/docker_sandbox.go
    # The kubelet would rewrite machine-wide sysctls (vm.overcommit_memory, kernel.panic*): warn only.
    sed -i 's/b := KernelTunableModify/b := KernelTunableWarn/' pkg/kubelet/cm/container_manager_linux.go
    grep -q 'b := KernelTunableWarn' pkg/kubelet/cm/container_manager_linux.go
    grep -q 'guaranteedOOMScoreAdj int = 0' pkg/kubelet/qos/policy.go
    go build -o "$work/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
    step 4 "generating pkg/generated/openapi (upstream's make does this; the tarball lacks it)"
    local pkgs
    pkgs=$( (find pkg cmd plugin -name '*.go'; find -L vendor/k8s.io -name '*.go') \
      | grep -v /testdata/ | { xargs grep -l '+k8s:openapi-gen=' || true; } \
      | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' \
      | xargs -n 1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
    "$work/openapi-gen" -i "$pkgs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
      -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$work/openapi-violations.report"
    step 5 "go build kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl (the long step)"
    local v=k8s.io/kubernetes/vendor/k8s.io upstream=${top#kubernetes-} ldflags
    ldflags="-s -w -X $v/component-base/version.gitVersion=v$upstream -X $v/client-go/pkg/version.gitVersion=v$upstream"
    ldflags+=" -X $v/component-base/version.gitMajor=${upstream%%.*} -X $v/component-base/version.gitMinor=$(cut -d. -f2 <<<"$upstream")"
    go build -ldflags "$ldflags" -o "$bin.partial/" k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl
    step 6 "etcd (Debian's etcd-server, extracted) and the pause image"
    cd "$work"
    apt-get download etcd-server
    dpkg-deb -x etcd-server_*.deb etcd-x
    cp etcd-x/usr/bin/etcd "$bin.partial/etcd"
    k8s_make_pause_image "$work" "$bin.partial"
  )
  rc=$?
  set -e
  local f
  for f in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd pause.tar; do
    [ -s "$bin.partial/$f" ] || { [ $rc -ne 0 ] || rc=1; echo "missing after the build: $f" >> "$log"; }
  done
  if [ $rc -ne 0 ]; then
    rm -rf "$bin.partial" "$work"
    tail -n 30 "$log" >&2
    k8s_die "build failed (log: $log; scratch removed)"
  fi
  mv "$bin.partial" "$bin"
  echo "$version" > "$bin/.complete"
  rm -rf "$work"
  k8s_log "built in $((SECONDS - t0)) s: $(du -sh "$bin" | cut -f1) in $bin (build scratch removed)"
}

# A static "pause" process (sleeps, reaps zombies, exits on INT/TERM) as a one-layer image in
# docker-archive form, which `ctr images import` reads. Written to $2/pause.tar.
k8s_make_pause_image() {
  local work=$1 out=$2 d=$1/pause
  mkdir -p "$d/rootfs"
  cat > "$d/pause.c" <<'EOF'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_term(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction term = {0}, child = {0};
  term.sa_handler = on_term;
  sigaction(SIGINT, &term, 0);
  sigaction(SIGTERM, &term, 0);
  child.sa_handler = on_child;
  child.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &child, 0);
  for (;;) pause();
}
EOF
  gcc -static -Os -s -o "$d/rootfs/pause" "$d/pause.c"
  tar -C "$d/rootfs" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$d/layer.tar" pause
  local diff_id config_id
  diff_id=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" > "$d/config.json"
  config_id=$(sha256sum "$d/config.json" | cut -d' ' -f1)
  mkdir -p "$d/archive"
  mv "$d/layer.tar" "$d/archive/layer.tar"
  mv "$d/config.json" "$d/archive/$config_id.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$config_id" "$K8S_PAUSE_IMAGE" \
    > "$d/archive/manifest.json"
  tar -C "$d/archive" -cf "$out/pause.tar" manifest.json "$config_id.json" layer.tar
}

k8s_kubeconfig() { # CA SERVER TOKEN
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: drydock-test
  cluster: {server: "$2", certificate-authority: "$1"}
users:
- name: user
  user: {token: "$3"}
contexts:
- name: drydock-test
  context: {cluster: drydock-test, user: user}
current-context: drydock-test
EOF
}

k8s_token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# A throwaway CA (valid 7 days, per cluster start), the API server's certificate, the service
# account key pair, and static bearer tokens: admin (system:masters) and one per node.
k8s_pki() {
  local p=$K8S_RUN/pki
  mkdir -p "$p"
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 7 -subj /CN=drydock-test-ca 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver-key.pem -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:127.0.0.1,IP:10.77.96.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' \
      "$K8S_APISERVER" > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out apiserver.pem -days 7 \
      -extfile apiserver.ext 2>/dev/null
    openssl genrsa -out sa-key.pem 2048 2>/dev/null
    openssl rsa -in sa-key.pem -pubout -out sa.pem 2>/dev/null
    rm -f apiserver.csr apiserver.ext ca.srl
    k8s_token > admin.token
    echo "$(cat admin.token),admin,admin,system:masters" > tokens.csv
    local n
    for n in "${K8S_NODES[@]}"; do
      k8s_token > "node$n.token"
      echo "$(cat "node$n.token"),system:node:node$n,node$n,system:nodes" >> tokens.csv
    done
    chmod 600 ./*.pem ./*.token tokens.csv
  )
}

k8s_store() {
  mkdir -p "$K8S_STORE"
  if [ "${DRYDOCK_K8S_STORE:-tmpfs}" = tmpfs ]; then
    # A limit, not a reservation: the sandbox image takes 2 GB per node, pods' writes the rest.
    mount -t tmpfs -o size=10g,mode=0700 drydock-k8s-store "$K8S_STORE"
  fi
}

k8s_network() {
  [ -e /var/run/netns/dd-k8s-sw ] && return
  ip netns add dd-k8s-sw
  ip -n dd-k8s-sw link set lo up
  ip -n dd-k8s-sw link add br0 type bridge
  ip -n dd-k8s-sw link set br0 up
  ip link add dd-k8s0 type veth peer name host netns dd-k8s-sw
  ip -n dd-k8s-sw link set host master br0 up
  ip addr add "$K8S_APISERVER/24" dev dd-k8s0
  ip link set dd-k8s0 up
  local n m
  for n in "${K8S_NODES[@]}"; do
    ip netns add "dd-k8s-n$n"
    ip -n dd-k8s-sw link add "n$n" type veth peer name eth0 netns "dd-k8s-n$n"
    ip -n dd-k8s-sw link set "n$n" master br0 up
    ip -n "dd-k8s-n$n" link set lo up
    ip -n "dd-k8s-n$n" addr add "10.77.0.2$n/24" dev eth0
    ip -n "dd-k8s-n$n" link set eth0 up
    ip route add "10.77.1$n.0/24" via "10.77.0.2$n" dev dd-k8s0
  done
  for n in "${K8S_NODES[@]}"; do
    for m in "${K8S_NODES[@]}"; do
      [ "$n" = "$m" ] || ip -n "dd-k8s-n$n" route add "10.77.1$m.0/24" via "10.77.0.2$m"
    done
  done
}

# Starts a daemon detached from this script (own session; no inherited lock fd), pid to $1.
k8s_daemon() {
  local pidfile=$1 logfile=$2; shift 2
  setsid "$@" </dev/null >"$logfile" 2>&1 9>&- &
  echo $! > "$pidfile"
}

k8s_wait() { # SECONDS WHAT COMMAND...
  local limit=$1 what=$2 i; shift 2
  for ((i = 0; i < limit * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  k8s_die "$what did not happen within $limit s (logs: $K8S_RUN/logs)"
}

k8s_control_plane() {
  local bin=$1 p=$K8S_RUN/pki l=$K8S_RUN/logs
  k8s_daemon "$K8S_RUN/etcd.pid" "$l/etcd.log" "$bin/etcd" --name drydock-test --data-dir "$K8S_RUN/etcd" \
    --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster drydock-test=http://127.0.0.1:23800 --unsafe-no-fsync
  k8s_daemon "$K8S_RUN/apiserver.pid" "$l/apiserver.log" "$bin/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:23790 --bind-address="$K8S_APISERVER" --advertise-address="$K8S_APISERVER" \
    --secure-port=6443 --insecure-port=0 --tls-cert-file="$p/apiserver.pem" --tls-private-key-file="$p/apiserver-key.pem" \
    --cert-dir="$K8S_RUN/apiserver-certs" --client-ca-file="$p/ca.pem" --token-auth-file="$p/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$p/sa.pem" \
    --service-account-signing-key-file="$p/sa-key.pem" --service-cluster-ip-range=10.77.96.0/24 \
    --kubelet-preferred-address-types=InternalIP --authorization-mode=Node,RBAC --allow-privileged=false \
    --profiling=false --v=1
  (umask 077; k8s_kubeconfig "$p/ca.pem" "https://$K8S_APISERVER:6443" "$(cat "$p/admin.token")" > "$K8S_RUN/admin.kubeconfig")
  k8s_wait 60 "the API server answering /readyz" "$bin/kubectl" --kubeconfig "$K8S_RUN/admin.kubeconfig" get --raw /readyz
  k8s_daemon "$K8S_RUN/controller-manager.pid" "$l/controller-manager.log" "$bin/kube-controller-manager" \
    --kubeconfig="$K8S_RUN/admin.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 --port=0 \
    --service-account-private-key-file="$p/sa-key.pem" --root-ca-file="$p/ca.pem" \
    --use-service-account-credentials=false --controllers='*,-nodeipam,-cloud-node-lifecycle' --profiling=false --v=1
  k8s_daemon "$K8S_RUN/scheduler.pid" "$l/scheduler.log" "$bin/kube-scheduler" \
    --kubeconfig="$K8S_RUN/admin.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 --port=0 --profiling=false --v=1
}

k8s_node() {
  local bin=$1 n=$2 d=$K8S_RUN/node$2 p=$K8S_RUN/pki ns=dd-k8s-n$2
  mkdir -p "$d/cni" "$d/kubelet" "$d/containerd" "$K8S_STORE/node$n"
  # The kubelet's --cgroup-root must exist in every cgroup v1 hierarchy, cpuset filled in.
  local c
  for c in /sys/fs/cgroup/*/; do
    case $c in */unified/) continue ;; esac
    mkdir -p "${c}dd-k8s-node$n"
  done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset/dd-k8s-node$n/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset/dd-k8s-node$n/cpuset.mems"
  cat > "$d/cni/10-drydock-k8s-pods.conf" <<EOF
{"cniVersion": "0.4.0", "name": "drydock-k8s-pods", "type": "bridge", "bridge": "cni0", "isGateway": true,
 "ipMasq": false, "hairpinMode": true,
 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.1$n.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
          "dataDir": "$d/cni-ipam"}}
EOF
  cat > "$d/containerd.toml" <<EOF
version = 2
root = "$K8S_STORE/node$n"
state = "$d/containerd/state"
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/$K8S_PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni"
EOF
  k8s_daemon "$d/containerd.pid" "$K8S_RUN/logs/containerd-node$n.log" \
    nsenter --net="/var/run/netns/$ns" containerd --config "$d/containerd.toml"
  k8s_wait 30 "containerd of node$n answering" ctr -a "$d/containerd.sock" version
  ctr -a "$d/containerd.sock" -n k8s.io images import "$bin/pause.tar" >/dev/null
  (umask 077; k8s_kubeconfig "$p/ca.pem" "https://$K8S_APISERVER:6443" "$(cat "$p/node$n.token")" > "$d/kubelet.kubeconfig")
  k8s_daemon "$d/kubelet.pid" "$K8S_RUN/logs/kubelet-node$n.log" nsenter --net="/var/run/netns/$ns" \
    "$bin/kubelet" --kubeconfig="$d/kubelet.kubeconfig" --hostname-override="node$n" --node-ip="10.77.0.2$n" \
    --node-labels="drydock.test/node=node$n" \
    --container-runtime=remote --container-runtime-endpoint="unix://$d/containerd.sock" --runtime-request-timeout=10m \
    --root-dir="$d/kubelet" --cert-dir="$d/kubelet/pki" --cgroup-driver=cgroupfs --cgroup-root="/dd-k8s-node$n" \
    --fail-swap-on=false --make-iptables-util-chains=false --address="10.77.0.2$n" --healthz-bind-address=127.0.0.1 \
    --read-only-port=0 --anonymous-auth=true --authorization-mode=AlwaysAllow \
    --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --eviction-hard='memory.available<100Mi,nodefs.available<200Mi,imagefs.available<200Mi' \
    --resolv-conf=/dev/null --register-node=true --v=1
}

# Imports a Docker image into both nodes' containerd (k8s.io namespace), unless already there.
k8s_import_image() {
  local image=$1 n need=() ref
  # containerd's name for it: docker.io/library/NAME:TAG, docker.io/ORG/NAME:TAG, or as given
  # when the first part names a registry (has a dot or a port, or is localhost).
  ref=$image
  if [[ $ref != */* ]]; then
    ref=docker.io/library/$ref
  else
    case ${ref%%/*} in *.*|*:*|localhost) ;; *) ref=docker.io/$ref ;; esac
  fi
  for n in "${K8S_NODES[@]}"; do
    k8s_has_image "$K8S_RUN/node$n/containerd.sock" "$ref" || need+=("$n")
  done
  [ ${#need[@]} -eq 0 ] && return
  docker image inspect "$image" >/dev/null 2>&1 || k8s_die "image $image is not in the local Docker daemon"
  local t0=$SECONDS
  k8s_log "importing $image into node(s) ${need[*]} (docker save, ctr import)"
  # Streamed, one `docker save` per node: no 2 GB archive to keep anywhere meanwhile.
  for n in "${need[@]}"; do
    docker save "$image" | ctr -a "$K8S_RUN/node$n/containerd.sock" -n k8s.io images import - >/dev/null \
      || k8s_die "docker save | ctr images import into node$n failed"
    k8s_discard_layers "$K8S_RUN/node$n/containerd.sock" "$ref"
  done
  k8s_log "imported $image in $((SECONDS - t0)) s"
}

# Whether a node's containerd has an image (the list is read whole first: `ctr ... | grep -q`
# under pipefail fails whenever grep stops reading early).
k8s_has_image() {
  local list
  list=$(ctr -a "$1" -n k8s.io images ls -q) || return 1
  grep -qxF "$2" <<<"$list"
}

# The kubelet deletes unused images when the disk runs low (eviction), and the pause image is
# unused between pods; with no registry to pull it from, every new pod would then fail. So each
# start checks it is there and imports it again if not.
k8s_ensure_pause() {
  local bin=$1 n sock
  for n in "${K8S_NODES[@]}"; do
    sock=$K8S_RUN/node$n/containerd.sock
    if ! k8s_has_image "$sock" "docker.io/$K8S_PAUSE_IMAGE"; then
      ctr -a "$sock" -n k8s.io images import "$bin/pause.tar" >/dev/null
    fi
  done
}

# Once an image is unpacked into snapshots, containers start from the snapshots alone; its layer
# blobs (uncompressed, as big as the image) only take disk. Drop them, as containerd's CRI
# option discard_unpacked_layers does for pulled images: a 2 GB sandbox image then costs each
# node 2 GB, not 4.
k8s_discard_layers() {
  local sock=$1 ref=$2 manifest layer
  manifest=$(ctr -a "$sock" -n k8s.io images ls | awk -v r="$ref" '$1 == r {print $3}')
  [ -n "$manifest" ] || return 0
  for layer in $(ctr -a "$sock" -n k8s.io content get "$manifest" \
      | python3 -c 'import json, sys; print(" ".join(l["digest"] for l in json.load(sys.stdin)["layers"]))'); do
    ctr -a "$sock" -n k8s.io content rm "$layer" >/dev/null
  done
}

k8s_nodes_ready() {
  local kubectl=$1 ready
  ready=$("$kubectl" --kubeconfig "$K8S_RUN/admin.kubeconfig" get nodes \
    -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null) || return 1
  [ "$(grep -c '=True$' <<<"$ready")" -eq ${#K8S_NODES[@]} ]
}

# A pid from a pid file is ours only while its command line names our directory (after a reboot
# or a killed session the number may belong to another process).
k8s_pid_ours() {
  local cmdline
  cmdline=$(tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$K8S_ROOT/"* ]]
}
k8s_pid_alive() { [ -f "$1" ] && k8s_pid_ours "$(cat "$1")"; }

k8s_running() {
  local bin=$1 f
  for f in etcd apiserver controller-manager scheduler; do k8s_pid_alive "$K8S_RUN/$f.pid" || return 1; done
  local n
  for n in "${K8S_NODES[@]}"; do
    k8s_pid_alive "$K8S_RUN/node$n/containerd.pid" && k8s_pid_alive "$K8S_RUN/node$n/kubelet.pid" || return 1
  done
  k8s_nodes_ready "$bin/kubectl"
}

# The sandbox image the Kubernetes tests run: $DRYDOCK_SANDBOX_IMAGE, else the one scripts/test
# uses (sandbox/image/build-offline prints it; cached by content hash, so usually instant).
k8s_sandbox_image() {
  if [ -n "${DRYDOCK_SANDBOX_IMAGE:-}" ]; then echo "$DRYDOCK_SANDBOX_IMAGE"; return; fi
  local here; here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  k8s_log "DRYDOCK_SANDBOX_IMAGE is unset: asking sandbox/image/build-offline for the test image"
  "$here/sandbox/image/build-offline" | tail -n 1
}

k8s_start() {
  [ "$(id -u)" -eq 0 ] || k8s_die "run as root (it creates network namespaces, cgroups and mounts)"
  [ -d /sys/fs/cgroup/cpuset ] || k8s_die "the kubelet 1.20 here needs cgroup v1 (no /sys/fs/cgroup/cpuset)"
  mkdir -p "$K8S_ROOT"
  exec 9>"$K8S_ROOT/lock"
  flock 9
  local bin image t0=$SECONDS
  bin=$(k8s_bin_dir)
  k8s_build "$bin"
  image=$(k8s_sandbox_image)
  t0=$SECONDS
  if ! k8s_running "$bin"; then
    if [ -d "$K8S_RUN" ] || [ -e /var/run/netns/dd-k8s-sw ]; then
      k8s_log "a previous cluster is half up or was left behind: stopping and cleaning it first"
      k8s_stop_locked
    fi
    k8s_apt_install containernetworking-plugins containerd runc openssl iproute2 util-linux
    k8s_log "starting etcd and the control plane on $K8S_APISERVER:6443 (logs: $K8S_RUN/logs)"
    mkdir -p "$K8S_RUN/logs"
    k8s_remember_paths
    k8s_store
    k8s_pki
    k8s_network
    k8s_control_plane "$bin"
    local n
    for n in "${K8S_NODES[@]}"; do k8s_node "$bin" "$n"; done
    k8s_wait 180 "both nodes becoming Ready" k8s_nodes_ready "$bin/kubectl"
    k8s_log "control plane and both nodes Ready in $((SECONDS - t0)) s"
  fi
  k8s_ensure_pause "$bin"
  k8s_import_image "$image"
  exec 9>&-
  echo "export DRYDOCK_TEST_KUBECONFIG='$K8S_RUN/admin.kubeconfig'"
  echo "export DRYDOCK_TEST_KUBECTL='$bin/kubectl'"
}

# Exit status 0 when the cluster is up with both nodes Ready (no build, no start).
k8s_status() {
  local bin
  bin=$(ls -d "$K8S_ROOT"/bin-*-r"$K8S_RECIPE" 2>/dev/null | head -n 1)
  [ -n "$bin" ] && [ -f "$bin/.complete" ] && k8s_running "$bin"
}

# Host paths the kubelet writes outside its root dir: removed at stop only if they were absent
# before the first start.
k8s_remember_paths() {
  local p
  : > "$K8S_RUN/created-paths"
  for p in /var/log/pods /var/log/containers /var/lib/kubelet /var/lib/cni; do
    [ -e "$p" ] || echo "$p" >> "$K8S_RUN/created-paths"
  done
}

# Sends SIGTERM to the daemons of the given pid files at once, waits up to 10 s for all of
# them, then SIGKILLs what is left.
k8s_stop_pids() {
  local f pid pids=() i alive
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    rm -f "$f"
    k8s_pid_ours "$pid" || continue
    kill "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  for ((i = 0; i < 100; i++)); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null; done
  return 0
}

k8s_stop() {
  [ "$(id -u)" -eq 0 ] || k8s_die "run as root"
  mkdir -p "$K8S_ROOT"
  exec 9>"$K8S_ROOT/lock"
  flock 9
  k8s_stop_locked
  exec 9>&-
}

k8s_stop_locked() {
  local t0=$SECONDS t1 t2 n d sock ids id pid addrs
  k8s_log "stopping the test cluster"
  k8s_stop_pids "$K8S_RUN"/node*/kubelet.pid
  for n in "${K8S_NODES[@]}"; do
    d=$K8S_RUN/node$n sock=$K8S_RUN/node$n/containerd.sock
    # Pod containers: killed through containerd so their shims exit.
    if k8s_pid_alive "$d/containerd.pid" && [ -S "$sock" ]; then
      ids=$(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null || true)
      for id in $ids; do ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
      for id in $ids; do ctr -a "$sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true; done
    fi
  done
  k8s_stop_pids "$K8S_RUN"/node*/containerd.pid "$K8S_RUN"/{scheduler,controller-manager,apiserver,etcd}.pid
  for n in "${K8S_NODES[@]}"; do
    # Shims left behind (their -address is this node's socket): stop them by pid.
    for pid in $(pgrep -f -- "-address $K8S_RUN/node$n/containerd.sock" 2>/dev/null || true); do
      kill -9 "$pid" 2>/dev/null || true
    done
  done
  t1=$SECONDS
  # Mounts under the run dir (the kubelet's bind mount of its root, pod volumes, container rootfs).
  grep -F " $K8S_RUN/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # Pod network namespaces containerd made (cni-*): ours are the ones with an address in 10.77.1N.
  for id in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do
    addrs=$(ip -n "$id" -4 addr 2>/dev/null || true)
    if grep -qE 'inet 10\.77\.1[0-9]\.' <<<"$addrs"; then ip netns del "$id" 2>/dev/null || true; fi
  done
  for n in "${K8S_NODES[@]}"; do ip netns del "dd-k8s-n$n" 2>/dev/null || true; done
  ip netns del dd-k8s-sw 2>/dev/null || true
  ip link del dd-k8s0 2>/dev/null || true
  rm -f /var/lib/cni/results/drydock-k8s-pods-* 2>/dev/null || true
  # Cgroups the kubelets made under their roots, deepest first.
  for n in "${K8S_NODES[@]}"; do
    for d in /sys/fs/cgroup/*/dd-k8s-node"$n"; do
      [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
  t2=$SECONDS
  if [ -f "$K8S_RUN/created-paths" ]; then
    while read -r p; do rm -rf "$p"; done < "$K8S_RUN/created-paths"
  fi
  rm -rf "$K8S_RUN"
  k8s_log "stopped and cleaned in $((SECONDS - t0)) s (processes $((t1 - t0)) s, mounts/netns/cgroups $((t2 - t1)) s, files $((SECONDS - t2)) s)"
}
