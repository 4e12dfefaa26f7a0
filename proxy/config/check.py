"""`dbproxy check-config --connect`: what only the servers can tell — can each promote-mode health user promote?"""

from __future__ import annotations

import asyncio

from proxy.engines import get_engine
from proxy.topology.coordinator import ActionFailed

from .model import Config

CHECK_SECONDS = 10.0


def server_problems(config: Config) -> list[str]:
    """One line per promote-mode cluster whose health user lacks failover privileges (or no instance answered)."""
    return asyncio.run(_server_problems(config))


async def _server_problems(config: Config) -> list[str]:
    problems: list[str] = []
    for cluster in config.clusters:
        if cluster.failover.mode != "promote":
            continue
        actions = get_engine(cluster.engine).failover_actions(cluster.health, cluster.failover)
        if actions is None:
            continue
        key = f"config error: {config.path}: clusters.{cluster.name}.health.user"
        errors = []
        for address in cluster.instances:
            try:
                missing = await asyncio.wait_for(actions.missing_privileges(address), CHECK_SECONDS)
            except (ActionFailed, TimeoutError) as exc:
                errors.append(f"{address}: {getattr(exc, 'message', '') or 'no answer'}")
                continue
            if missing:
                problems.append(f"{key}: promote mode, but {cluster.health.user} cannot promote or re-point on "
                                f"{address}: missing {', '.join(missing)}")
            break
        else:
            problems.append(f"{key}: could not check the failover privileges: {'; '.join(errors)}")
    return problems
