"""The local deploy: the Pulumi program run under Pulumi's mock runtime, with what it declares
applied through the Docker API (Docker, or Podman's compatible socket)."""
