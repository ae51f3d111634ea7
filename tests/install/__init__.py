"""Install paths: the Helm chart, the plain manifests and the container image."""
