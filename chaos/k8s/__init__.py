"""The Kubernetes side of a run: manifests, the kubelet, the pod as PID 1, the Service, replays."""
