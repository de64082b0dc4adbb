"""Per-stack secrets: one password per role, generated once and kept in Pulumi state (or, for
the superuser, taken from `elizadb:superuserPassword` through the settings), and the seed for
stable SCRAM salts."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from infra.components.common import child
from infra.roles import ROLES, SUPERUSER
from infra.settings import StackSettings


class StackSecrets(pulumi.ComponentResource):
    passwords: dict[str, pulumi.Output[str]]
    salt_seed: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        extra_roles: tuple[str, ...] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("elizadb:index:StackSecrets", name, None, opts)

        def generated(role: str) -> pulumi.Output[str]:
            # Letters and digits only: the password goes into URIs, pgpass and userlist files.
            password = random.RandomPassword(
                f"{name}-{role}", length=32, special=False, opts=child(self)
            )
            return pulumi.Output.secret(password.result)

        names = [role.name for role in ROLES] + list(extra_roles)
        self.passwords = {role: generated(role) for role in names}
        configured = settings.superuser_password
        self.passwords[SUPERUSER] = (
            pulumi.Output.secret(configured.get_secret_value())
            if configured is not None
            else generated(SUPERUSER)
        )
        self.salt_seed = generated("scram-salt-seed")
        self.register_outputs({})
