"""Airflow with the CeleryExecutor on one machine, from Debian's packages, on 127.0.0.1 only.

    python scripts/airflow_celery.py [--workers 2] [--concurrency 2] [--port 8080]
    make airflow-celery                                   # the same, for a person

starts, in order:

1. ``postgres`` (Debian's ``postgresql``) as the metadata database: a cluster made once with
   ``initdb`` (as the ``postgres`` user when run as root), a password for the ``airflow`` role;
2. ``redis-server`` (Debian's ``redis-server``) as the Celery broker, nothing saved to disk;
3. ``airflow db migrate`` and the LLM pool from params.yaml (what ``airflow-init`` does in
   docker-compose.yaml);
4. ``airflow api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and N
   ``airflow celery worker`` processes, each worker with its own Celery hostname
   (``worker-1@…``), its own ``--concurrency`` and its own task hostname (what the UI and the
   REST API show as a task instance's ``hostname``).

Every process runs in its own process group and is stopped on Ctrl-C (or by ``stop()``).
The tests use the same code through :class:`CeleryDeployment`. A service that cannot start
raises :class:`ServiceError` with the reason and the end of its log.

``COMPOSE_SERVICES`` and ``common_settings()`` are the one statement of which components run
with which commands and settings; tests/dags/test_compose.py checks docker-compose.yaml
against them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DB_USER = "airflow"
DB_NAME = "airflow"
# The task hostname a worker reports (see worker_hostname); unset outside this deployment.
HOSTNAME_ENV = "ISE_WORKER_HOSTNAME"

# docker-compose.yaml service → the `airflow` command it runs. One entry per component; the
# compose file has the same services with the same commands (checked by a test).
COMPOSE_SERVICES: dict[str, str] = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
# Services only the compose file has, and why this script does without them.
COMPOSE_ONLY: dict[str, str] = {
    "postgres": "this script runs Debian's postgres itself",
    "redis": "this script runs Debian's redis-server itself",
    "airflow-init": "this script runs `airflow db migrate` and `airflow pools set` itself",
    "sandbox-engine": "workspaces here use the local backend (bubblewrap) or the host's engine",
    "sandbox-image": "the workspace image is built by the docker backend when it is used",
}


class ServiceError(RuntimeError):
    """A component could not start; the message says which, why, and ends with its log."""


def worker_hostname() -> str:
    """``[core] hostname_callable`` of this deployment: each worker's own name.

    Several workers on one machine would all report the machine's name, so the task
    instances' ``hostname`` could not tell them apart; each worker process gets its own name
    in ``ISE_WORKER_HOSTNAME``. Every other process (and any machine without it) reports its
    fully qualified domain name, as Airflow does by default.
    """
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


def common_settings(project: Path) -> dict[str, str]:
    """Settings every Airflow component gets, here and in docker-compose.yaml alike.

    Secrets, addresses and paths differ between the two and come from ``site_settings``.
    """
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project / "plugins"),
        "ISE_PARAMS": str(project / "params.yaml"),
    }


# Settings only the compose file sets, and why the script does without them.
COMPOSE_ONLY_SETTINGS: dict[str, str] = {
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "the script gives each worker its own --concurrency",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": (
        "the compose healthcheck asks the scheduler's health server, which would listen on "
        "every interface here"
    ),
}


def local_settings(api_port: int) -> dict[str, str]:
    """Settings only the one-machine deployment needs (compose has a host per container)."""
    return {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        # Workers share this machine's name; each reports its own (see worker_hostname).
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "scripts.airflow_celery.worker_hostname",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
    }


# Keys whose values are this machine's (addresses, secrets, files): both places must set them.
SITE_KEYS = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def _wait_for(
    what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode}; its log:\n{_tail(log)}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.3)
    raise ServiceError(f"{what} did not come up within {timeout:.0f} s; its log:\n{_tail(log)}")


@dataclass
class Process:
    """One started component: its own process group, its log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path
    user: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0  # where this start's output begins in the (appended) log

    def start(self) -> Process:
        with self.log.open("ab") as handle:
            self.log_offset = handle.tell()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # stopped (or killed) as one group
                user=self.user,
            )
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc.pid

    def output(self) -> str:
        """What this start of the process has logged so far."""
        try:
            with self.log.open("rb") as handle:
                handle.seek(self.log_offset)
                return handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group at once: what a machine that dies looks like."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Children that outlived their leader (a task's sandbox) go with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _postgres_bin() -> Path:
    """The folder with Debian's initdb/postgres (not on PATH by default)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if candidates:
        return candidates[0].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ServiceError(
        "postgres: initdb not found (install Debian's postgresql: apt-get install postgresql)"
    )


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise ServiceError(
            "redis: redis-server not found (install Debian's redis-server: "
            "apt-get install redis-server)"
        )
    return found


@dataclass
class Postgres:
    """A private cluster in ``folder``; as root it runs as the ``postgres`` user."""

    folder: Path
    port: int
    password: str
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DB_NAME}"

    def _user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def _initdb(self, pg_bin: Path) -> None:
        data = self.folder / "data"
        if (data / "PG_VERSION").exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        user = self._user()
        if user is not None:
            shutil.chown(self.folder, user, user)
            shutil.chown(pwfile, user, user)
        pwfile.chmod(0o600)
        done = subprocess.run(
            [str(pg_bin / "initdb"), "-D", str(data), "-U", DB_USER, "--pwfile", str(pwfile),
             "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--no-instructions"],
            capture_output=True, text=True, user=user, timeout=120, check=False,
        )  # fmt: skip
        pwfile.unlink()
        if done.returncode != 0:
            raise ServiceError(
                f"postgres: initdb failed in {data} (exit {done.returncode}): "
                f"{(done.stderr or done.stdout)[-2000:]}"
                + ("\n(the postgres user must be able to reach this folder)" if user else "")
            )

    def start(self) -> Postgres:
        pg_bin = _postgres_bin()
        if self._user() is not None:
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError(
                    "postgres: running as root needs the 'postgres' user, which Debian's "
                    "postgresql package creates"
                ) from None
        self._initdb(pg_bin)
        data = self.folder / "data"
        self.process = Process(
            "postgres",
            [str(pg_bin / "postgres"), "-D", str(data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.folder}",
             "-c", "max_connections=200", "-c", "fsync=off", "-c", "synchronous_commit=off"],
            dict(os.environ), self.folder / "postgres.log", self.folder, user=self._user(),
        ).start()  # fmt: skip
        _wait_for("postgres", self._accepts, 60, self.process.proc, self.process.log)  # type: ignore[arg-type]
        self._create_database()
        return self

    def _connect(self, dbname: str) -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=DB_USER,
            password=self.password,
            dbname=dbname,
            connect_timeout=5,
        )

    def _accepts(self) -> bool:
        import psycopg2

        try:
            self._connect("postgres").close()
        except psycopg2.OperationalError:
            return False
        return True

    def _create_database(self) -> None:
        connection = self._connect("postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process is not None:
            # SIGTERM is postgres' "smart" shutdown, which waits for clients; SIGINT is "fast".
            if self.process.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGINT)
            self.process.stop()


@dataclass
class Redis:
    folder: Path
    port: int
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def start(self) -> Redis:
        server = _redis_server()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = Process(
            "redis",
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--protected-mode", "yes"],
            dict(os.environ), self.folder / "redis.log", self.folder,
        ).start()  # fmt: skip
        _wait_for("redis", self._pong, 30, self.process.proc, self.process.log)  # type: ignore[arg-type]
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class Secrets:
    """What every component must share: kept in ``home`` so a restart keeps logins valid."""

    db_password: str
    admin_password: str
    jwt_secret: str
    api_secret_key: str
    fernet_key: str

    @classmethod
    def load(cls, home: Path) -> Secrets:
        path = home / "secrets.json"
        if path.exists():
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        from cryptography.fernet import Fernet

        made = cls(
            db_password=secrets.token_urlsafe(16),
            admin_password=secrets.token_urlsafe(12),
            jwt_secret=secrets.token_hex(32),
            api_secret_key=secrets.token_hex(16),
            fernet_key=Fernet.generate_key().decode(),
        )
        home.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o077)
        try:
            path.write_text(json.dumps(made.__dict__), encoding="utf-8")
        finally:
            os.umask(old)
        return made


@dataclass
class CeleryDeployment:
    """Postgres, Redis, the Airflow components and N Celery workers on 127.0.0.1.

    ``home`` holds AIRFLOW_HOME (logs), the Postgres cluster, Redis' folder and the shared
    secrets. ``settings`` adds or overrides Airflow settings for every component (the tests
    shorten the heartbeat timeouts so a killed worker is noticed in seconds).
    """

    home: Path
    project: Path = REPO
    params: Path | None = None
    workers: int = 2
    concurrency: int = 2
    api_port: int = 0
    triggerer: bool = True
    settings: Mapping[str, str] = field(default_factory=dict)
    postgres: Postgres | None = None
    redis: Redis | None = None
    components: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = self.home.resolve()
        self.api_port = self.api_port or free_port()
        self.secrets = Secrets.load(self.home)
        self.logs = self.home / "process-logs"

    # --- the environment -------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def passwords_file(self) -> Path:
        return self.home / "passwords.json"

    def environment(self) -> dict[str, str]:
        """Every component's environment: common settings, this site's, then overrides."""
        if self.postgres is None or self.redis is None:
            raise RuntimeError("start postgres and redis first")
        db = self.postgres.url
        env = dict(os.environ)
        env.pop("AIRFLOW_VAR_ISE_PARAMS", None)
        env.update(common_settings(self.project))
        if self.params is not None:
            env["ISE_PARAMS"] = str(self.params)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home / "airflow"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__FERNET_KEY": self.secrets.fernet_key,
                "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets.jwt_secret,
                "AIRFLOW__API__SECRET_KEY": self.secrets.api_secret_key,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                **local_settings(self.api_port),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "DVC_NO_ANALYTICS": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
                ),
            }
        )
        env.update(self.settings)
        return env

    # --- starting and stopping ---------------------------------------------------------------

    def _airflow(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.environment(),
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ServiceError(
                f"airflow {' '.join(args)} failed (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
        return done.stdout

    def _pool(self) -> tuple[str, int]:
        sys.path.insert(0, str(REPO))
        from ise_core.pipeline import concurrency_plan, load_settings, resolve_params_path

        params = self.params or resolve_params_path(None, self.project)
        settings = load_settings(params)
        return settings.airflow.pool, concurrency_plan(settings).pool_slots

    def init(self) -> None:
        """``airflow db migrate``, the LLM pool and the admin login (as airflow-init does)."""
        (self.home / "airflow").mkdir(parents=True, exist_ok=True)
        self._airflow("db", "migrate")
        pool, size = self._pool()
        self._airflow("pools", "set", pool, str(size), "LLM-bound ISE tasks")
        if not self.passwords_file.exists():
            old = os.umask(0o077)
            try:
                self.passwords_file.write_text(
                    json.dumps({"admin": self.secrets.admin_password}), encoding="utf-8"
                )
            finally:
                os.umask(old)

    def start_component(self, name: str, argv: list[str], **env: str) -> Process:
        """Start (or start again) one Airflow component under ``name``."""
        old = self.components.get(name)
        if old is not None and old.alive():
            raise RuntimeError(f"{name} is already running")
        self.logs.mkdir(parents=True, exist_ok=True)
        process = Process(
            name,
            [str(BIN / "airflow"), *argv],
            {**self.environment(), **env},
            self.logs / f"{name}.log",
            self.project,
        ).start()
        self.components[name] = process
        return process

    def commands(self) -> dict[str, list[str]]:
        """Each component's ``airflow`` arguments, by name (what ``start`` runs). Logs are
        files under AIRFLOW_HOME that the API server reads itself: the workers share this
        machine, so none serves its logs over HTTP."""
        commands = {
            "api-server": ["api-server"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
        }
        if self.triggerer:
            commands["triggerer"] = ["triggerer"]
        for name in self.worker_names():
            commands[name] = [
                "celery", "worker", "--concurrency", str(self.concurrency),
                "--celery-hostname", f"{name}@%h", "--skip-serve-logs",
            ]  # fmt: skip
        return commands

    def worker_names(self) -> list[str]:
        return [f"worker-{i}" for i in range(1, self.workers + 1)]

    def start_worker(self, name: str) -> Process:
        return self.start_component(name, self.commands()[name], **{HOSTNAME_ENV: name})

    def start_scheduler(self) -> Process:
        return self.start_component("scheduler", self.commands()["scheduler"])

    def start(self) -> CeleryDeployment:
        """Everything, in dependency order; on any failure what started is stopped again."""
        try:
            self.postgres = Postgres(
                self.home / "postgres", free_port(), self.secrets.db_password
            ).start()
            self.redis = Redis(self.home / "redis", free_port()).start()
            self.init()
            workers = set(self.worker_names())
            for name, argv in self.commands().items():
                if name in workers:
                    self.start_worker(name)
                else:
                    self.start_component(name, argv)
            api = self.components["api-server"]
            _wait_for("the API server", self._api_up, 180, api.proc, api.log)  # type: ignore[arg-type]
            self.wait_for_workers(120)
        except BaseException:
            self.stop()
            raise
        return self

    def _api_up(self) -> bool:
        with urllib.request.urlopen(f"{self.api_url}/api/v2/version", timeout=5) as reply:
            return bool(reply.status == 200)

    def wait_for_workers(self, timeout: float) -> None:
        """Until every worker is up (its log says it is ready) or one has died."""
        deadline = time.monotonic() + timeout
        pending = set(self.worker_names())
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                worker = self.components[name]
                if not worker.alive():
                    raise ServiceError(f"{name} exited; its log:\n{_tail(worker.log)}")
                if " ready." in worker.output():
                    pending.discard(name)
            time.sleep(0.5)
        if pending:
            logs = "\n".join(f"--- {n}\n{_tail(self.components[n].log)}" for n in pending)
            raise ServiceError(f"Celery workers not ready within {timeout:.0f} s:\n{logs}")

    def stop(self) -> None:
        """Stop every component, then Redis, then Postgres (each by its own process group)."""
        for process in reversed(list(self.components.values())):
            process.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def __enter__(self) -> CeleryDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def deployment(**kwargs: Any) -> Iterator[CeleryDeployment]:
    """A deployment in a temporary home, removed afterwards (tests and benchmarks)."""
    home = Path(tempfile.mkdtemp(prefix="ise-celery-"))
    home.chmod(0o755)  # the postgres user must reach its cluster inside
    try:
        with CeleryDeployment(home, **kwargs) as started:
            yield started
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="task slots per worker")
    parser.add_argument("--port", type=int, default=8080, help="API server port on 127.0.0.1")
    parser.add_argument(
        "--home", type=Path, default=REPO / "airflow_home" / "celery", help="state folder"
    )
    parser.add_argument("--params", type=Path, default=None, help="params file (ISE_PARAMS)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.concurrency < 1:
        parser.error("--workers and --concurrency must be at least 1")
    args.home.mkdir(parents=True, exist_ok=True)
    args.home.chmod(0o755)
    stack = CeleryDeployment(
        args.home, params=args.params, workers=args.workers, concurrency=args.concurrency,
        api_port=args.port,
    )  # fmt: skip
    stopping = False

    def interrupted(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        print(f"==> starting postgres, redis and Airflow in {args.home} (logs in process-logs/)")
        stack.start()
        print(
            f"\n    Airflow UI:  {stack.api_url}\n"
            f"    login:       admin / {stack.secrets.admin_password}   "
            f"(from {stack.passwords_file})\n"
            f"    workers:     {', '.join(stack.worker_names())} "
            f"(--concurrency {args.concurrency} each)\n"
            f"    broker:      {stack.redis.url if stack.redis else ''}\n"
            "    DAG:         ise_refresh   (Ctrl-C stops everything)\n",
            flush=True,
        )
        while True:
            for name, process in stack.components.items():
                if not process.alive():
                    print(f"{name} exited; its log:\n{_tail(process.log)}", file=sys.stderr)
                    return 1
            time.sleep(2)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n==> stopping", flush=True)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
