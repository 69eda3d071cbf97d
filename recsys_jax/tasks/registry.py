"""Tasks by name: a config's ``task`` field picks one."""

from __future__ import annotations

from typing import Any

from recsys_jax.tasks.base import Task
from recsys_jax.tasks.implicit import ImplicitTask
from recsys_jax.tasks.rating import RatingTask
from recsys_jax.tasks.retrieval import RetrievalTask
from recsys_jax.tasks.sequential import SequentialTask

TASKS: dict[str, type[Task]] = {
    RatingTask.name: RatingTask,
    ImplicitTask.name: ImplicitTask,
    RetrievalTask.name: RetrievalTask,
    SequentialTask.name: SequentialTask,
}


def get_task(config: Any) -> Task:
    """The task named by ``config.task``.

    Raises:
      ValueError: when the config names no task or an unknown one.
    """
    name = config.get("task")
    if name not in TASKS:
        raise ValueError(f"config.task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]()
