"""Where the local stand-in for Container Instances runs a container group's one
container on this machine: a container of the scoring image (podman or docker), or a
plain `python -m scorer run` process when there is no engine or no image.

A backend starts a job with an environment (and, for a Container App, the container's
arguments in place of `run`), tells whether it ended (and its exit code), stops it
(SIGTERM, then SIGKILL after a grace period, as ACI does when a group is deleted),
returns its log and removes it. ``pull_error(image)`` says why an image cannot be had,
which the stand-in reports as ACI reports a failed pull.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: seconds between SIGTERM and SIGKILL when a job is stopped
GRACE_S = 15


class Backend:
    """Runs one job per container group."""

    name = "process"

    def pull_error(self, image: str) -> str | None:
        """Why ``image`` cannot be run here, or None when it can."""
        return None

    def start(self, group: str, image: str, env: dict[str, str], cpu: float, memory_gb: float,
              args: list[str] | None = None) -> Any: ...
    def poll(self, handle: Any) -> int | None: ...
    def stop(self, handle: Any) -> None: ...
    def logs(self, handle: Any) -> bytes: ...
    def remove(self, handle: Any) -> None: ...


class ProcessBackend(Backend):
    """The job as a plain process of this checkout's Python (no image)."""

    name = "process"

    def start(self, group, image, env, cpu, memory_gb, args=None):
        log = tempfile.TemporaryFile()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SCORER_", "AZURE_"))}
        proc = subprocess.Popen([sys.executable, "-m", "scorer", *(args or ["run"])], env={**base, **env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        return proc, log

    def poll(self, handle):
        return handle[0].poll()

    def stop(self, handle):
        proc = handle[0]
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self, handle):
        handle[1].seek(0)
        return handle[1].read()

    def remove(self, handle):
        handle[1].close()


class ContainerBackend(Backend):
    """podman or docker, with the flags docker/engine.sh settles on for this machine."""

    def __init__(self, command: list[str], env: dict[str, str]):
        self.command = command
        self.env = env  # CONTAINERS_CONF for podman
        self.name = command[0]

    @classmethod
    def detect(cls, prefer: str = "auto") -> "ContainerBackend | None":
        """The engine docker/engine.sh finds, or None."""
        env = dict(os.environ)
        if prefer in ("podman", "docker"):
            env["SCORER_ENGINE"] = prefer
        try:
            out = subprocess.run(["bash", str(ROOT / "docker" / "engine.sh")], env=env, capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split("\n")
        except (OSError, subprocess.SubprocessError):
            return None
        command = [w for w in out if w and not w.startswith("CONTAINERS_CONF=")]
        for w in out:
            if w.startswith("CONTAINERS_CONF="):
                env["CONTAINERS_CONF"] = w.split("=", 1)[1]
        if not command or not shutil.which(command[0]):
            return None
        return cls(command, env)

    def has_image(self, image: str) -> bool:
        return self._run("image", "inspect", image, check=False, timeout=60).returncode == 0

    def pull_error(self, image):
        if self.has_image(image):
            return None
        return (f"Failed to pull image \"{image}\": the image is not on this machine and no registry can be "
                "reached (build it with scripts/build-image)")

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.command + list(args), env=self.env, capture_output=True, timeout=timeout,
                              check=check)

    def start(self, group, image, env, cpu, memory_gb, args=None):
        # Values go through the engine's environment (`-e NAME`), never its command line.
        command, args = args, self.command + ["run", "-d", "--name", group, "--network", "host",
                               "--cpus", str(cpu), "--memory", f"{int(memory_gb * 1024)}m"]
        for n in sorted(env):
            args += ["-e", n]
        args.append(image)
        args += list(command or [])  # the image's entrypoint is `scorer`; its default command `run`
        subprocess.run(args, env={**self.env, **env}, capture_output=True, timeout=120, check=True)
        return group

    def poll(self, handle):
        out = self._run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", handle,
                        check=False).stdout.decode().split()
        if out and out[0] in ("exited", "stopped", "dead"):
            return int(out[1])
        return None

    def stop(self, handle):
        self._run("stop", "-t", str(GRACE_S), handle, check=False, timeout=GRACE_S + 45)

    def logs(self, handle):
        r = self._run("logs", handle, check=False)
        return r.stdout + r.stderr

    def remove(self, handle):
        self._run("rm", "-f", handle, check=False)


def choose(prefer: str, image: str) -> Backend:
    """The backend ``prefer`` names ("process", "podman", "docker" or "auto": a
    container engine that has ``image``, else a process). Raises ValueError when a
    named engine is not usable here."""
    if prefer == "process":
        return ProcessBackend()
    engine = ContainerBackend.detect(prefer)
    if engine is not None and (prefer != "auto" or engine.has_image(image)):
        return engine
    if prefer != "auto":
        raise ValueError(f"{prefer} is not usable here")
    return ProcessBackend()
