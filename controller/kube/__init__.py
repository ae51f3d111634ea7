"""Everything that talks to the Kubernetes API: client set-up, list+watch caches, writes,
Events and leader election. Only this package imports the kubernetes client."""
