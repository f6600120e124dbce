"""Reading and validating Kubernetes manifests into a typed model."""
