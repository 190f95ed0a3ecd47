"""The ``--jobs`` processes of one search: which device each takes, starting and stopping
them. Each joins the study like any worker and runs its queued trials."""

from __future__ import annotations

import multiprocessing
import os
import sys

import torch

from automl.errors import AutomlError, Terminated
from automl.search.scheduler.owners import Owner
from automl.search.scheduler.queue import Refill, ToQueue, work
from automl.search.scheduler.session import join
from automl.search.scheduler.signals import die_with, hurried, stopping_on_signals
from automl.search.settings import SearchSettings
from automl.training.device import resolve_device


def job_devices(device: str, jobs: int, per_gpu: int) -> list[str]:
    """A device per job: GPUs in turn, ``per_gpu`` jobs sharing each; else the CPU."""
    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return ["cpu"] * jobs
    if device.startswith("cuda:"):
        gpus = [resolved.index or 0]
    else:
        gpus = list(range(torch.cuda.device_count()))
    return assign_gpus(gpus, jobs, per_gpu)


def assign_gpus(gpus: list[int], jobs: int, per_gpu: int) -> list[str]:
    """Jobs 0..per_gpu-1 on the first GPU, the next ``per_gpu`` on the second, and around."""
    return [f"cuda:{gpus[(job // per_gpu) % len(gpus)]}" for job in range(jobs)]


def _job_main(
    settings: SearchSettings,
    *,
    threads: int,
    job: int,
    deadline: float | None,
    owner: str,
    search: int,
    plan: ToQueue | None = None,
) -> None:
    """A worker process of ``--jobs``: join the study and run the search's tickets until
    none is left; with a budget (``plan``, shared with the search), queue the next one
    when the queue is empty, as the search itself does. It dies with its search (the
    process ``search``): SIGTERM, its trial handed back and its run closed."""
    die_with(search)  # a search killed outright (kill -9) takes its jobs with it
    torch.set_num_threads(threads)
    if settings.device.startswith("cuda:"):  # its caches and RNG calls then go to its GPU
        torch.cuda.set_device(torch.device(settings.device))  # (else GPU 0 gets a context)
    try:
        with stopping_on_signals():  # its trial closed once, however many signals come
            _run_job(settings, job=job, deadline=deadline, owner=owner, plan=plan)
    except KeyboardInterrupt as stop:
        os._exit(143 if isinstance(stop, Terminated) else 130)
    except AutomlError as exc:  # one line, as the command itself would say it
        print(f"automl job {job}: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def _run_job(
    settings: SearchSettings, *, job: int, deadline: float | None, owner: str, plan: ToQueue | None
) -> None:
    session = join(settings, job=job)
    objective = session.objective()
    objective.deadline = deadline  # the budget's end cuts a running trial too
    held = Owner(owner)
    refill = Refill(session.study, held, set(), plan) if plan is not None else None
    work(
        session.study, objective, deadline=deadline,
        on_stale=session.close_stale, owner=held, refill=refill,
    )  # fmt: skip


def spawn_jobs(
    settings: SearchSettings,
    devices: list[str],
    threads: int,
    deadline: float | None,
    owner: Owner,
    *,
    plan: ToQueue | None = None,
) -> list[multiprocessing.process.BaseProcess]:
    """Start a process for every device but the first, which the caller's own process
    takes. Each receives the settings whole, with its own device."""
    if len(devices) < 2:
        return []
    context = multiprocessing.get_context("spawn")
    processes: list[multiprocessing.process.BaseProcess] = []
    for job, device in enumerate(devices[1:], start=1):
        process = context.Process(
            target=_job_main,
            args=(settings.but(device=device),),
            kwargs={
                "threads": threads,
                "job": job,
                "deadline": deadline,
                "owner": owner.id,
                "search": os.getpid(),
                "plan": plan,
            },
            name=f"automl-job-{job}",
        )
        process.start()
        processes.append(process)
    return processes


def stop_jobs(processes: list[multiprocessing.process.BaseProcess], *, signal_them: bool) -> None:
    """Stop the job processes, each closing its trial (failed, queued again) and its run.

    Ctrl-C at a terminal reaches every process of the group by itself, and a second SIGINT
    could cut a job's own clean-up short: then they are only given time. SIGTERM or an
    error reaches only us (``signal_them``), and so does a SIGINT sent with ``kill``: a job
    still running after a few seconds is sent SIGINT.
    """
    import signal

    for process in processes:
        if not signal_them and not hurried():  # a second Ctrl-C: no more waiting
            process.join(timeout=5)
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGINT)
    for process in processes:
        process.join(timeout=60)
        if process.is_alive():
            process.terminate()
