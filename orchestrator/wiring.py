"""Builds the adapters from settings: the one place that knows which transport a setting selects."""

from __future__ import annotations

from typing import Any

from orchestrator.adapters.db.base import Database
from orchestrator.core.config import Settings, worker_credentials


def statement_timeout_ms(settings: Settings) -> int:
    """The longest one SQL call may run over direct Postgres: a third of the lease, 1-60 s.

    Without it a call waiting on a lock (a migration, an operator's open transaction) holds the tick,
    and with it the lease renewal, /healthz and SIGTERM, for as long as the lock is held. A third of
    the lease leaves the leader time to renew after one such failure.
    """
    return int(max(1.0, min(60.0, settings.lease_ttl_sec / 3.0)) * 1000)


def make_database(settings: Settings) -> Database:
    """The Database over the transport the settings select (``DB_BACKEND``; Supabase when both)."""
    settings.require(database=True)  # so the URL and key the backend needs are set
    if settings.database_backend == "supabase":
        from orchestrator.adapters.db.supabase import SupabaseTransport

        assert settings.supabase_url and settings.supabase_service_role_key
        return Database(SupabaseTransport(settings.supabase_url, settings.supabase_service_role_key))
    import psycopg
    from psycopg import sql

    from orchestrator.adapters.db.postgres import PostgresTransport

    limit_ms = statement_timeout_ms(settings)
    assert settings.database_url

    def bound_statements(conn: psycopg.Connection) -> None:
        # Per session (the transport's connections are autocommit); LISTEN uses its own connection.
        conn.execute(sql.SQL("set statement_timeout = {}").format(sql.Literal(limit_ms)))

    return Database(
        PostgresTransport(
            settings.database_url,
            max_size=max(4, min(16, settings.apply_concurrency)),
            configure=bound_statements,
        )
    )


def make_provider(settings: Settings, **overrides: Any) -> Any:
    """The RunpodClient, configured from the frozen settings only (never the process environment)."""
    from orchestrator.runpod_client import RunpodClient

    # Credentials given to the pods in WORKER_ENV only (the daemon on DATABASE_URL, say) are the ones the
    # start hands the worker over SSH, as the settings' would be (checked as theirs by load_settings).
    creds, _ = worker_credentials(settings.values)
    kwargs: dict[str, Any] = dict(
        api_key=settings.runpod_api_key or "",
        gpu_type=list(settings.gpu_types),
        worker_image=settings.runpod_worker_image,
        storage_name=list(settings.runpod_storage_name or ()),
        volume_mount_path=settings.runpod_volume_mount_path,
        disk_size_gb=settings.runpod_disk_size_gb,
        container_disk_gb=settings.runpod_container_disk_gb,
        ssh_public_key_path=settings.runpod_ssh_public_key_path,
        ssh_private_key_path=settings.runpod_ssh_private_key_path,
        supabase_url=creds["SUPABASE_URL"],
        supabase_service_role_key=creds["SUPABASE_SERVICE_ROLE_KEY"],
        supabase_anon_key=creds["SUPABASE_ANON_KEY"],
        pod_env_supabase_keys=settings.pod_env_keys,
        api=settings.runpod_api,
        api_base_url=settings.runpod_api_base_url,
        ssh_connect_timeout=settings.ssh_connect_timeout_sec,
        ssh_command_timeout=settings.ssh_command_timeout_sec,
        # How the worker starts on its pod (orchestrator.adapters.worker_recipe.WorkerStart; docs/worker-start.md).
        worker_dirs=list(settings.worker_dirs),
        worker_launch=settings.worker_launch,
        worker_git_branch=settings.worker_git_branch,
        worker_git_commit=settings.worker_git_commit,
        worker_wgp_profile=settings.worker_wgp_profile,
        worker_uv_install_url=settings.worker_uv_install_url,
        worker_poll_interval=settings.worker_poll_interval_sec,
        apt_packages=list(settings.worker_apt_packages),
        env={},
    )
    kwargs.update(overrides)
    return RunpodClient(**kwargs)
