"""The ClusterExternalSecret controller: its loop and writes (controller.py) and the pure rules
that decide which namespaces get which ExternalSecret and what its status says (logic.py)."""
