//! Coordinator actor: expands sweeps into jobs and schedules them on workers. Built in the actor-runtime issue.
