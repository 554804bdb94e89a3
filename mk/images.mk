# Container images without a Docker engine: podman/buildah (runc, cgroupfs) from local stand-in base
# images, each image started and checked, then exported as OCI archives for containerd.
# Users with Docker build as images/README.md says (`docker build -f images/Dockerfile .`).
.PHONY: images images-check images-export

images: install ## Build, check (tests/images on real Kafka) and export every image to .streamtrain/images/ with podman (cold ~15 min)
	PY=$(PY) tools/images/build.sh all

images-check: install ## Start the already built images and check them: non-root, read-only root, --help, health, SIGTERM
	PY=$(PY) tools/images/build.sh check

images-export: ## Save the built images as OCI archives under .streamtrain/images/ (ctr -n k8s.io images import)
	tools/images/build.sh export
