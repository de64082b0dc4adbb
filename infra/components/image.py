"""The stack's image, built on the target Docker host from image/ and tagged with a digest of
its inputs, so it is rebuilt only when the Containerfile, a script or the base image changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi
import pulumi_docker as docker

from infra.components.common import child
from infra.settings import StackSettings

IMAGE_DIR = Path(__file__).resolve().parents[2] / "image"


def image_fingerprint(base_image: str, image_dir: Path = IMAGE_DIR) -> str:
    digest = hashlib.sha256(f"base={base_image}\n".encode())
    for path in sorted(p for p in image_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(image_dir)}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class StackImage(pulumi.ComponentResource):
    ref: pulumi.Output[str]

    def __init__(
        self, name: str, settings: StackSettings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("elizadb:index:Image", name, None, opts)
        base = settings.image.base
        tag = f"{settings.image.repository}:{image_fingerprint(base)}"
        image = docker.RemoteImage(
            name,
            name=tag,
            build=docker.RemoteImageBuildArgs(
                context=str(IMAGE_DIR),
                dockerfile=str(IMAGE_DIR / "Containerfile"),
                build_args={"BASE_IMAGE": base},
            ),
            keep_locally=True,
            opts=child(self),
        )
        # `name` resolves only once the image exists, so containers wait for the build.
        self.ref = image.name
        self.register_outputs({"ref": self.ref})
