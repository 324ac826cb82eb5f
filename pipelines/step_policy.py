"""How a pipeline task runs on Vertex: one policy type shared by every pipeline.

:class:`StepPolicy` names a task's display name, caching, retries and resources;
:func:`apply_policy` sets them on a task. The training and batch prediction pipelines declare
their steps' policies as constants and apply them the same way.
"""

import dataclasses

from kfp import dsl


@dataclasses.dataclass(frozen=True)
class StepPolicy:
    """How one task runs on Vertex: display name, caching, retries and resources.

    Attributes:
        display_name: the task's name in the Vertex console.
        cache: reuse an earlier run's outputs for the same inputs.
        cpu: CPU request and limit, e.g. ``"0.5"`` (kfp.local ignores resources).
        memory: memory request and limit, e.g. ``"1G"``.
        retries: how many times a failed task is retried (0: never).
        backoff: first wait before a retry (doubled each time), e.g. ``"60s"``.
    """

    display_name: str
    cache: bool
    cpu: str
    memory: str
    retries: int = 0
    backoff: str = "0s"


def apply_policy(
    task: dsl.PipelineTask, policy: StepPolicy, *, retries: bool = True, resources: bool = True
) -> dsl.PipelineTask:
    """Set a task's display name, caching, retries and resources from ``policy``.

    Args:
        task: the task to configure (changed in place).
        policy: the settings.
        retries: apply ``policy.retries``; False leaves the task without retries (local runs,
            where a failure is not transient).
        resources: apply ``policy.cpu``/``memory``; False for a task whose machine is set
            elsewhere (the train step as a custom job).

    Returns:
        ``task``, for chaining.
    """
    task.set_display_name(policy.display_name).set_caching_options(policy.cache)
    if retries and policy.retries:
        task.set_retry(
            num_retries=policy.retries, backoff_duration=policy.backoff, backoff_factor=2.0
        )
    if resources:
        task.set_cpu_request(policy.cpu).set_cpu_limit(policy.cpu)
        task.set_memory_request(policy.memory).set_memory_limit(policy.memory)
    return task
