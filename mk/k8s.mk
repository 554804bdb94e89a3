# Kubernetes: CRD, operator, chart, image, skaffold. Tests need no cluster; the run targets do.
# `make help` lists every target named [a-zA-Z0-9_-]+ with a `## ` description.
.PHONY: test-k8s test-cold test-node test-skaffold kube-node-up kube-build kube-up kube-test kube-crd kube-lint kube-template kube-kind kube-minikube kube-down

KIND_CLUSTER ?= streamtrain
K8S_VERSION ?= v1.32.0

test-k8s: install kube-build ## Real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok; built first, ~12 min cold): CRD, helm install/upgrade/test/uninstall and from an OCI registry, the operator under its ServiceAccount
	$(PY) -m pytest -q -m "kube and not node" tests/k8s

test-cold: install ## test-k8s from empty caches (a fresh Go build and module cache and control-plane cache under .streamtrain/cold, removed after): proves a new machine passes
	rm -rf .streamtrain/cold && mkdir -p .streamtrain/cold/gocache .streamtrain/cold/gomod .streamtrain/cold/kube
	GOCACHE=$(CURDIR)/.streamtrain/cold/gocache GOMODCACHE=$(CURDIR)/.streamtrain/cold/gomod STREAMTRAIN_KUBE_CACHE=$(CURDIR)/.streamtrain/cold/kube \
	  $(MAKE) test-k8s; status=$$?; chmod -R u+w .streamtrain/cold; rm -rf .streamtrain/cold; exit $$status

test-node: install ## A StreamingTraining on a real node (containerd + runc + kubelet; root): real Pods from our images, a model version rolled to the running scorer (needs `make images-export`)
	bash tools/kube/build.sh --node
	$(PY) -m pytest -q -s -m "node and not skaffold" tests/k8s

test-skaffold: install ## skaffold run and the skaffold dev loop on the real node (root): images built through podman's API, pushed to a loopback registry, rebuilt and rolled out after a source change
	bash tools/kube/build.sh --node --registry
	@mkdir -p .streamtrain/images && { [ -f .streamtrain/images/pause.tar ] || podman save -q --format oci-archive -o .streamtrain/images/pause.tar registry.k8s.io/pause:3.10; }
	$(PY) -m pytest -q -s -m skaffold tests/k8s

kube-node-up: install ## Start a real control plane and a real node (root) in the foreground (prints KUBECONFIG; Ctrl-C stops it)
	bash tools/kube/build.sh --node
	$(PY) -m tests.k8s.controlplane up --node

kube-build: ## Build the control plane, kubectl, helm, kwok and a container registry from the Go module proxy into .streamtrain/kube (cached)
	bash tools/kube/build.sh --registry

kube-up: install ## Start a real control plane on loopback in the foreground (prints KUBECONFIG; Ctrl-C stops it)
	$(PY) -m tests.k8s.controlplane up

kube-test: install ## Kubernetes tests without a cluster: CRD, rendering, chart, skaffold, images (the marker kube ones run in test-k8s)
	$(PY) -m pytest -q tests/unit/streamtrain_operator tests/unit/repo/test_chart.py tests/unit/repo/test_images.py \
	  tests/unit/repo/test_skaffold.py tests/unit/repo/test_controlplane_build.py tests/unit/stack/test_monitoring.py

kube-crd: ## Regenerate the CRD (operator/streamtrain_operator/crd.py) and the Secret-reference policy (secret_refs.py) of the chart
	$(PY) -m streamtrain.operator.crd > charts/streamtrain/crds/streamingtrainings.yaml
	$(PY) -m streamtrain.operator.secret_refs > charts/streamtrain/policies/secret-references.yaml

kube-lint: ## helm lint --strict of charts/streamtrain (Helm SDK, no binary; K8S_VERSION=v1.29.0 to change)
	$(PY) -c "import helm_python as h, json, sys; r = h.lint('charts/streamtrain', {}, strict=True, kube_version='$(K8S_VERSION)'); print(json.dumps(r, indent=1)); sys.exit(bool([e for e in r['errors'] if 'missing these dependencies' not in e]))"

kube-template: ## Print the chart's manifests as `helm template` would (release "streamtrain", namespace "streamtrain")
	$(PY) -c "import helm_python as h; [print('---\n# ' + p + '\n' + t) for p, t in h.Chart.load('charts/streamtrain').render({}, name='streamtrain', namespace='streamtrain').items()]"

kube-kind: ## Create a kind cluster and run the whole pipeline on it with skaffold (needs docker, kind, skaffold, helm)
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER)
	skaffold run -p kind --kube-context kind-$(KIND_CLUSTER)

kube-minikube: ## Start minikube and run the whole pipeline on it with skaffold (needs minikube, skaffold, helm)
	minikube status >/dev/null 2>&1 || minikube start --cpus 4 --memory 8g
	skaffold run -p minikube --kube-context minikube

kube-down: ## Delete the example pipeline and uninstall the chart (the cluster stays)
	kubectl -n streamtrain delete streamingtrainings --all --wait=true
	skaffold delete
