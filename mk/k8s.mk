# Kubernetes targets: chart, CRD, operator and image. No cluster needed except for the kind-* and kube-dev targets.
# Target names avoid digits (k8s): the help target lists names matching [a-zA-Z_-]+.
KIND_CLUSTER ?= streamtrain
K8S_NAMESPACE ?= streamtrain
IMAGE ?= ghcr.io/streamtrain/streamtrain:0.1.0

.PHONY: kube-test kube-crd kube-operator kube-image kind-up kind-down kube-dev

kube-test: install ## Kubernetes tests: chart render+lint, schemas of 3 Kubernetes versions, Strimzi, operator on kmock, skaffold schema
	$(PY) -m pytest -q tests/k8s

kube-crd: install ## Regenerate charts/streamtrain/crds/streamingtrainings.yaml from operator/streamtrain_operator/crd.py
	PYTHONPATH=operator $(PY) -m streamtrain_operator.crd > charts/streamtrain/crds/streamingtrainings.yaml

kube-operator: install ## Run the operator against the current kubectl context (kubeconfig), all namespaces
	.venv/bin/kopf run --standalone --all-namespaces operator/main.py

kube-image: ## Build the one StreamTrain image (needs Docker)
	docker build -f images/Dockerfile -t $(IMAGE) .

kind-up: kube-image ## Create a kind cluster, load the image, install the chart with Strimzi
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER)
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)
	helm dependency build charts/streamtrain
	helm upgrade --install streamtrain charts/streamtrain --namespace $(K8S_NAMESPACE) --create-namespace --set strimzi.enabled=true --wait

kind-down: ## Delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

kube-dev: ## skaffold dev loop on kind (SKAFFOLD_PROFILE=minikube for minikube)
	skaffold dev -p $${SKAFFOLD_PROFILE:-kind}
